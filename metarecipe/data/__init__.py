"""Kaldi data directories, audio I/O and corpus plug-ins."""

from metarecipe.data.datadir import (
    DataDir,
    DataDirError,
    Segment,
    combine_data_dirs,
    fix_data_dir,
    read_data_dir,
    subset_data_dir,
    validate_data_dir,
    write_data_dir,
)

__all__ = ["DataDir", "DataDirError", "Segment", "combine_data_dirs", "fix_data_dir", "read_data_dir",
           "subset_data_dir", "validate_data_dir", "write_data_dir"]
