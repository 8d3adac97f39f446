"""recipes/utils/parse_options.sh: --foo-bar sets foo_bar, types from the defaults, --config files, --help."""

import subprocess
from pathlib import Path

import pytest

UTILS = Path(__file__).resolve().parents[1] / "recipes" / "utils"

SCRIPT = """#!/usr/bin/env bash
set -euo pipefail
# begin options
stage=0              # first stage
lm_weight=0.5        # LM weight
source_langs="de es"  # source languages
cv_root=""           # corpus root
force=false          # redo
# end options
. {utils}/parse_options.sh
echo "stage=$stage lm_weight=$lm_weight source_langs=$source_langs cv_root=$cv_root force=$force rest=$*"
"""


@pytest.fixture
def script(tmp_path):
    path = tmp_path / "run.sh"
    path.write_text(SCRIPT.format(utils=UTILS))
    return path


def run(script, *args):
    done = subprocess.run(["bash", str(script), *args], capture_output=True, text=True, timeout=30)
    return done.returncode, done.stdout.strip(), done.stderr.strip()


def test_defaults_and_both_spellings_set_the_variables(script):
    assert run(script) == (0, "stage=0 lm_weight=0.5 source_langs=de es cv_root= force=false rest=", "")
    code, out, _ = run(script, "--force", "--stage", "3", "--lm-weight=1.25", "--source-langs", "it pl cs", "x")
    assert code == 0
    assert out == "stage=3 lm_weight=1.25 source_langs=it pl cs cv_root= force=true rest=x"


@pytest.mark.parametrize("args, message", [
    (["--stgae", "3"], "unknown option --stgae (command line)"),
    (["--stage", "three"], "--stage takes an integer, got 'three'"),
    (["--lm-weight", "heavy"], "--lm-weight takes a number, got 'heavy'"),
    (["--force", "yes"], "--force takes true or false, got 'yes'"),
    (["--stage"], "--stage takes an integer, got ''"),
])
def test_unknown_options_and_wrong_types_are_errors(script, args, message):
    code, out, err = run(script, *args)
    assert code == 1 and out == ""
    assert message in err


def test_config_file_is_read_first_and_the_command_line_wins(script, tmp_path):
    conf = tmp_path / "mini.conf"
    conf.write_text("# a preset\n--stage=2\n--source-langs=\"eo\"  # comment\n\n--cv-root=/data/cv\n")
    code, out, _ = run(script, "--stage", "5", "--config", str(conf))
    assert code == 0
    assert out == "stage=5 lm_weight=0.5 source_langs=eo cv_root=/data/cv force=false rest="
    conf.write_text("--stage=2\n--stgae=4\n")
    code, _, err = run(script, "--config", str(conf))
    assert code == 1 and f"unknown option --stgae ({conf}:2)" in err
    conf.write_text("stage 2\n")
    code, _, err = run(script, "--config", str(conf))
    assert code == 1 and f"{conf}:1: expected --option=value" in err
    code, _, err = run(script, "--config", str(tmp_path / "missing.conf"))
    assert code == 1 and "no such file" in err


def test_mini_is_short_for_the_preset_beside_the_script(script, tmp_path):
    code, _, err = run(script, "--mini")
    assert code == 1 and "unknown option --mini" in err  # no preset: --mini is no option
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "mini.conf").write_text("--stage=2\n--source-langs=\"eo\"\n")
    code, out, _ = run(script, "--stage", "5", "--mini", "x")
    assert code == 0
    assert out == "stage=5 lm_weight=0.5 source_langs=eo cv_root= force=false rest=x"
    assert "--mini" in run(script, "--help")[1]


def test_help_lists_every_option_with_its_type_default_and_description(script):
    code, out, _ = run(script, "--help")
    assert code == 0
    for line in ("--stage", "int", "(default: '0') first stage"), ("--lm-weight", "float", "(default: '0.5')"), \
            ("--source-langs", "string", "(default: 'de es') source languages"), ("--force", "bool", "redo"), \
            ("--cv-root", "string", "(default: '')"), ("--config FILE",):
        assert any(all(part in text for part in line) for text in out.splitlines()), line


def test_the_recipe_help_lists_its_options():
    recipe = UTILS.parent / "cv_lowresource" / "run.sh"
    out = subprocess.run(["bash", str(recipe), "--help"], capture_output=True, text=True, timeout=30).stdout
    for option in ("--stage", "--stop-stage", "--nj", "--cv-root", "--source-langs", "--target-langs", "--budgets",
                   "--algos", "--config", "--exp", "--force", "--corpus", "--corpus-dir", "--beam"):
        assert f"  {option} " in out, option


def test_options_parse_when_the_recipe_is_named_from_the_repository_root():
    """README's `bash recipes/cv_lowresource/run.sh ...`: run.sh cd's to its own directory before it parses."""
    root = UTILS.parents[1]
    done = subprocess.run(["bash", "recipes/cv_lowresource/run.sh", "--help"], cwd=root, capture_output=True,
                          text=True, timeout=30)
    assert done.returncode == 0 and "  --budgets " in done.stdout, done.stderr
    done = subprocess.run(["bash", "recipes/cv_lowresource/run.sh", "--no-such-option", "1"], cwd=root,
                          capture_output=True, text=True, timeout=30)
    assert done.returncode != 0 and "unknown option --no-such-option" in done.stderr, done.stderr
