"""Bad inputs of meta-train, adapt, decode and compress (issue 17, items 4, 7 and 8): each is one line on stderr
naming the thing, exit status 1, no traceback, and no experiment or output directory written."""

import contextlib
import io
import subprocess
import sys

import pytest
import torch
from test_commonvoice import make_release

from metarecipe.cli.main import COMMANDS, main
from metarecipe.data import read_data_dir
from metarecipe.data.corpora import get_corpus
from metarecipe.features import compute_feats
from metarecipe.io.model_files import save_model
from metarecipe.kernels.compact import seal
from metarecipe.models import BatchedCTCModel, ModelConfig
from metarecipe.text.tokens import TokenTable


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A data dir with features, its token table and a model file (gru_hidden 64: its middle is tensor data)."""
    tmp = tmp_path_factory.mktemp("bad_input")
    data = get_corpus("commonvoice")(make_release(tmp / "cv", "cv-21.0"), tmp / "data", splits=("train",))["de/train"]
    compute_feats(data, nj=1, progress=False)
    tokens = TokenTable.from_texts(read_data_dir(data).text.values())
    tokens.write(tmp / "tokens.txt")
    torch.manual_seed(0)
    model = BatchedCTCModel(ModelConfig(vocab_size=len(tokens), conv_channels=4, d_model=16, gru_hidden=64,
                                        gru_layers=1))
    save_model(tmp / "model" / "final.pt", model, tokens, {"algorithm": "fomaml", "rule": "sgd"})
    (tmp / "lm.arpa").write_text("\\data\\\nngram 1=3\n\n\\1-grams:\n-1\t<s>\n-1\t</s>\n-1\thund\n\\end\\\n",
                                 encoding="utf-8")
    return tmp, data


def run_process(*args):
    """`python -m metarecipe ARGS` in a process of its own."""
    return subprocess.run([sys.executable, "-m", "metarecipe", *map(str, args)], capture_output=True, text=True,
                          timeout=300)


def run(*args):
    """`metarecipe ARGS` through the command's entry point in this process (the same code as run_process, without
    a new interpreter importing torch for every case), as a CompletedProcess."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in args])
    return subprocess.CompletedProcess(args, code, out.getvalue(), err.getvalue())


def assert_one_line_error(result, *names):
    """Exit status 1, nothing on stdout, one stderr line that names every one of `names`, no traceback."""
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr and result.stdout == "", result.stdout + result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    for name in names:
        assert str(name) in lines[0], lines[0]


def meta_train_args(data, exp, *changes):
    return ["meta-train", "--exp-dir", exp, f"data.train=[{data}]", "data.group_by=spk", "train.steps=4",
            "train.tasks_per_batch=2", "train.support_seconds=0.4", "train.query_seconds=0.4",
            "model.conv_channels=4", "model.d_model=16", "model.gru_hidden=8", "model.gru_layers=1", *changes]


def adapt_args(model, data, exp, *changes):
    return ["adapt", "--exp-dir", exp, f"model={model}", f"data={data}", "adapt.minutes=0.03", *changes]


@pytest.mark.parametrize("change, names", [
    ("train.steps=-3", ["train.steps: must be at least 1, got -3"]),
    ("train.support_seconds=600", ["data.train: task", "too little for disjoint support and query sets"]),
    ("model.d_model=-4", ["model.d_model: must be at least 1, got -4"]),
    ("model.num_mel_bins=40", ["model.num_mel_bins: the model takes 40 feature dimensions", "has 80"]),
    ("inner.lr=-0.1", ["inner.lr: must be above 0"]),
])
def test_meta_train_refuses_budgets_and_sizes_that_cannot_work(setup, tmp_path, change, names):
    _, data = setup
    assert_one_line_error(run(*meta_train_args(data, tmp_path / "exp", change)), *names)
    assert not (tmp_path / "exp").exists()


@pytest.mark.parametrize("damage, line, reason", [
    (lambda text: text.replace(b"<unk> 2", b"<unk> \xe9 2"), 3, "not UTF-8"),
    (lambda text: text.replace(b" 3\n", b" 4\n"), 4, "expected '<symbol> 3', got"),
    (lambda text: text.replace(b" 4\n", b" 3\n"), 5, "expected '<symbol> 4', got"),
    (lambda text: text + text.splitlines()[3].split()[0] + b" %d\n" % text.count(b"\n"), None,
     "is listed again (first on line 4)"),
])
def test_meta_train_refuses_a_bad_token_table_naming_its_line(setup, tmp_path, damage, line, reason):
    tmp, data = setup
    tokens = tmp_path / "tokens.txt"
    tokens.write_bytes(damage((tmp / "tokens.txt").read_bytes()))
    line = line or len(tokens.read_bytes().splitlines())
    result = run(*meta_train_args(data, tmp_path / "exp", f"data.tokens={tokens}"))
    assert_one_line_error(result, f"{tokens}:{line}: ", reason)
    assert not (tmp_path / "exp").exists()


def test_resuming_an_exp_dir_whose_config_is_not_yaml_names_it_and_writes_nothing(setup, tmp_path):
    _, data = setup
    exp = tmp_path / "exp"
    exp.mkdir()
    (exp / "config.yaml").write_text("train: [steps: 4\nmodel: {\n", encoding="utf-8")
    assert_one_line_error(run_process(*meta_train_args(data, exp)), f"{exp / 'config.yaml'}: not valid YAML")
    assert [p.name for p in exp.iterdir()] == ["config.yaml"]


def model_with_unknown_config_key(tmp_path, source):
    """The model file as a later metarecipe might write it: a config key this one does not know, sealed."""
    payload = torch.load(source, weights_only=True)
    payload["config"]["bogus_size"] = 3
    path = tmp_path / "newer" / "final.pt"
    path.parent.mkdir()
    torch.save(seal(payload), path)
    return path


def test_adapt_refuses_a_negative_budget(setup, tmp_path):
    tmp, data = setup
    result = run_process(*adapt_args(tmp / "model" / "final.pt", data, tmp_path / "exp", "adapt.minutes=-1"))
    assert_one_line_error(result, "adapt.minutes: must be above 0, got -1")
    assert not (tmp_path / "exp").exists()


def test_adapt_refuses_a_model_whose_config_has_an_unknown_key(setup, tmp_path):
    tmp, data = setup
    model = model_with_unknown_config_key(tmp_path, tmp / "model" / "final.pt")
    assert_one_line_error(run(*adapt_args(model, data, tmp_path / "exp")), f"{model}: config: unknown key 'bogus_size'")
    assert not (tmp_path / "exp").exists()


@pytest.mark.parametrize("content", [b"\x00garbage", b""])
def test_adapt_refuses_unreadable_meta_sgd_rates(setup, tmp_path, content):
    tmp, data = setup
    model = tmp_path / "meta" / "final.pt"
    model.parent.mkdir()
    model.write_bytes((tmp / "model" / "final.pt").read_bytes())
    (model.parent / "alphas.pt").write_bytes(content)
    result = run(*adapt_args(model, data, tmp_path / "exp", "rule=metasgd"))
    assert_one_line_error(result, f"{model.parent / 'alphas.pt'}: not a readable Meta-SGD rates file")
    assert not (tmp_path / "exp").exists()


def flipped_copy(tmp_path, source):
    """A copy of the model file with 4 KiB in its middle inverted (issue 17, item 7)."""
    data = bytearray(source.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 4096] = bytes(b ^ 0xFF for b in data[middle:middle + 4096])
    path = tmp_path / "adapted.pt"
    path.write_bytes(bytes(data))
    return path


def test_decode_refuses_a_damaged_model_file(setup, tmp_path):
    tmp, data = setup
    model = flipped_copy(tmp_path, tmp / "model" / "final.pt")
    assert_one_line_error(run_process("decode", model, data, tmp_path / "out"), f"{model}: damaged model file")
    assert not (tmp_path / "out").exists()


def test_compress_refuses_a_damaged_model_file(setup, tmp_path):
    tmp, _ = setup
    model = flipped_copy(tmp_path, tmp / "model" / "final.pt")
    assert_one_line_error(run("compress", model, tmp_path / "out" / "small.pt", "--int8"),
                          f"{model}: damaged model file")
    assert not (tmp_path / "out").exists()


def test_decode_refuses_a_model_whose_config_has_an_unknown_key(setup, tmp_path):
    tmp, data = setup
    model = model_with_unknown_config_key(tmp_path, tmp / "model" / "final.pt")
    assert_one_line_error(run("decode", model, data, tmp_path / "out"), f"{model}: config: unknown key 'bogus_size'")
    assert not (tmp_path / "out").exists()


def test_decode_refuses_a_non_utf8_lm_naming_the_file_and_line(setup, tmp_path):
    tmp, data = setup
    lm = tmp_path / "lm.arpa"
    lm.write_bytes((tmp / "lm.arpa").read_bytes().replace(b"hund", b"h\xfcnd"))
    result = run("decode", tmp / "model" / "final.pt", data, tmp_path / "out", "--lm", lm)
    assert_one_line_error(result, f"{lm}:7: not UTF-8")
    assert not (tmp_path / "out").exists()


def test_help_lists_every_command_and_each_command_has_its_own(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert all(name in out for name in COMMANDS)
    for name in COMMANDS:
        with pytest.raises(SystemExit) as done:
            main([name, "--help"])
        assert done.value.code == 0 and f"usage: metarecipe {name}" in capsys.readouterr().out
