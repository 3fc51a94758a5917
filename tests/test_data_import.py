"""`fedchain data import` and `data split`: an organization's own files become validated shards
that record their schema; every bad input is one clear line."""
from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from safetensors import safe_open

from fedchain.cli.main import cli
from fedchain.node.errors import ConfigError
from fedchain.node.ml.data import check_shard, load_shard
from fedchain.node.ml.importers import ImportOptions, import_source
from fedchain.node.protocol.task import DataSchema
from fedchain.node.tools.operations import import_data, split_dataset

from _support import run_cli

CSV = """age,color,score,label
1.5,red,3,yes
2.5,blue,,no
3.0,red,5,yes
4.0,green,6,no
"""


def _write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text)
    return p


def _invoke(args):
    """The CLI in this process (fast); fedchain errors become one line and exit status 1."""
    return CliRunner().invoke(cli, args)


def _images(root, classes=("cat", "dog"), n=4, size=(6, 5)):
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in classes:
        (root / c).mkdir(parents=True)
        for i in range(n):
            arr = (rng.random((size[0], size[1], 3)) * 255).astype(np.uint8)
            Image.fromarray(arr, "RGB").save(root / c / (f"{i}.png" if i % 2 else f"{i}.jpg"))
    return root


def test_csv_import_records_its_schema_in_the_shard(tmp_path):
    src = _write(tmp_path, "a.csv", CSV)
    out = tmp_path / "a.safetensors"
    schema = import_data(str(src), str(out), ImportOptions(label="label", missing="impute"))
    assert schema["inputs"] == 5 and schema["classes"] == 2 and schema["samples"] == 4
    with safe_open(str(out), framework="pt") as fh:
        meta = json.loads(fh.metadata()["schema"])
        assert fh.get_tensor("x").dtype.is_floating_point and str(fh.get_tensor("y").dtype) == "torch.int64"
    assert meta["feature_names"] == ["age", "color=blue", "color=green", "color=red", "score"]
    assert meta["label_names"] == ["no", "yes"]
    assert meta["x_dtype"] == "float32" and meta["y_dtype"] == "int64"
    assert meta["encoding"]["score"] == {"type": "numeric", "impute": 5.0}  # the median
    ds = load_shard(out)
    assert ds.x[1].tolist() == [2.5, 1, 0, 0, 5.0] and ds.y.tolist() == [1, 0, 1, 0]


def test_missing_values_are_refused_naming_the_column(tmp_path):
    src = _write(tmp_path, "a.csv", CSV)
    with pytest.raises(ConfigError, match="column 'score' has 1 missing values .*--missing impute"):
        import_source(src, ImportOptions(label="label"))


def test_missing_categories_are_imputed_with_the_mode(tmp_path):
    src = _write(tmp_path, "a.csv", "c,label\nred,0\n,1\nred,0\nblue,1\n")
    ds = import_source(src, ImportOptions(label="label", missing="impute", categorical="ordinal"))
    assert ds.info["encoding"]["c"] == {"type": "ordinal", "categories": ["blue", "red"], "impute": "red"}
    assert ds.x[:, 0].tolist() == [1, 1, 1, 0]


def test_a_missing_label_column_is_one_line(tmp_path):
    src = _write(tmp_path, "a.csv", CSV)
    r = _invoke(["data", "import", str(src), "--label", "target", "--out", str(tmp_path / "o.safetensors")])
    assert r.exit_code == 1
    assert r.output.strip() == "error: " + f"{src} has no label column 'target' (columns: age, color, score, label)"


def test_non_numeric_junk_names_the_column_and_row(tmp_path):
    src = _write(tmp_path, "j.csv", "age,label\n1,a\nabc,b\n2,a\n")
    with pytest.raises(ConfigError, match=r"column 'age' is numeric but holds 'abc' in data row 2"):
        import_source(src, ImportOptions(label="label"))


@pytest.mark.parametrize("text,message", [("", "is empty"), ("a,label\n", "no rows")])
def test_an_empty_table_is_refused(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message):
        import_source(_write(tmp_path, "e.csv", text), ImportOptions(label="label"))


def test_a_table_needs_a_label_option(tmp_path):
    with pytest.raises(ConfigError, match="--label COLUMN"):
        import_source(_write(tmp_path, "a.csv", CSV))


def test_regression_keeps_a_numeric_label(tmp_path):
    src = _write(tmp_path, "r.csv", "x,price\n1,2.5\n2,3.5\n3,4.0\n")
    ds = import_source(src, ImportOptions(label="price", kind="regression"))
    assert ds.kind == "regression" and ds.classes == 1 and ds.y.dtype == np.float32
    with pytest.raises(ConfigError, match="fractional numbers; for a numeric target use --task-kind regression"):
        import_source(src, ImportOptions(label="price"))


def test_parquet_import(tmp_path):
    pd = pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    src = tmp_path / "a.parquet"
    pd.DataFrame({"a": [1.0, 2.0, 3.0, 4.0], "kind": ["x", "y", "x", "y"], "y": [0, 1, 0, 1]}).to_parquet(src)
    ds = import_source(src, ImportOptions(label="y"))
    assert ds.x.shape == (4, 3) and ds.info["feature_names"] == ["a", "kind=x", "kind=y"]


def test_npz_import(tmp_path):
    src = tmp_path / "d.npz"
    np.savez(src, x=np.arange(12, dtype=np.float64).reshape(6, 2), y=np.array([3, 5, 3, 5, 3, 5]))
    ds = import_source(src)
    assert ds.x.dtype == np.float32 and ds.y.tolist() == [0, 1, 0, 1, 0, 1] and ds.info["label_names"] == ["3", "5"]
    np.savez(tmp_path / "bad.npz", features=np.zeros((2, 2)))
    with pytest.raises(ConfigError, match="holds x .*and y"):
        import_source(tmp_path / "bad.npz")


def test_image_folder_import_resizes_and_converts(tmp_path):
    root = _images(tmp_path / "imgs")
    ds = import_source(root, ImportOptions(image_size=(4, 3), grayscale=True))
    assert ds.x.shape == (8, 1, 4, 3) and ds.inputs == (1, 4, 3) and ds.info["label_names"] == ["cat", "dog"]
    assert 0 <= ds.x.min() and ds.x.max() <= 1
    assert import_source(root).x.shape == (8, 3, 6, 5)  # RGB at the first image's size


def test_an_unreadable_image_names_the_file(tmp_path):
    root = _images(tmp_path / "imgs")
    (root / "dog" / "broken.png").write_bytes(b"not a png")
    r = _invoke(["data", "import", str(root), "--out", str(tmp_path / "o.safetensors")])
    assert r.exit_code == 1 and r.output.startswith("error: cannot read image ") and "broken.png" in r.output
    assert len(r.output.strip().splitlines()) == 1


def test_holdout_stays_inside_the_shard(tmp_path):
    src = _write(tmp_path, "h.csv", "a,label\n" + "".join(f"{i},{i % 2}\n" for i in range(20)))
    out = tmp_path / "h.safetensors"
    r = _invoke(["data", "import", str(src), "--label", "label", "--holdout", "0.2", "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert "16 samples" in r.output and "4 held out" in r.output
    ds = load_shard(out)
    assert len(ds.y) == 16 and len(ds.y_holdout) == 4 and sorted(ds.y_holdout.tolist()) == [0, 0, 1, 1]


def test_not_a_shard_says_what_a_shard_is(tmp_path):
    bad = _write(tmp_path, "x.safetensors", "hello")
    with pytest.raises(ConfigError, match=r"not a fedchain data shard .*fedchain data import"):
        load_shard(bad)


def test_shard_mismatch_names_both_sides(tmp_path):
    src = _write(tmp_path, "a.csv", CSV)
    ds = import_source(src, ImportOptions(label="label", missing="impute"))
    with pytest.raises(ConfigError, match="has feature count 5 but the task expects 64"):
        check_shard(ds, DataSchema(inputs=64, classes=10))
    with pytest.raises(ConfigError, match="has 2 classes but the task expects 3"):
        check_shard(ds, DataSchema(inputs=5, classes=3))
    with pytest.raises(ConfigError, match="has image shape 3x6x5 but the task expects 1x6x5"):
        check_shard(import_source(_images(tmp_path / "imgs")), DataSchema(inputs=(1, 6, 5), classes=2))
    check_shard(ds, DataSchema(inputs=5, classes=2))


def test_split_a_csv_into_peer_shards_and_a_test_split(tmp_path):
    src = _write(tmp_path, "s.csv", "a,b,label\n" + "".join(f"{i},{i * 2},{'xy'[i % 2]}\n" for i in range(40)))
    sizes, test, out = split_dataset(str(src), 3, "iid", 0.5, 0, str(tmp_path / "shards"), ImportOptions(label="label"))
    assert sum(sizes) + test == 40 and len(sizes) == 3
    assert load_shard(out / "peer-0.safetensors").info["feature_names"] == ["a", "b"]
    assert load_shard(out / "test.safetensors").info["label_names"] == ["x", "y"]


def test_split_accepts_a_built_in_name_as_source(tmp_path):
    r = _invoke(["data", "split", "wine", "--peers", "2", "--out", str(tmp_path / "s")])
    assert r.exit_code == 0, r.output
    r2 = _invoke(["data", "split", "--dataset", "wine", "--peers", "2", "--out", str(tmp_path / "s2")])
    assert r2.exit_code == 0, r2.output
    # Same samples (not the same bytes: safetensors writes metadata keys in no fixed order).
    a, b = load_shard(tmp_path / "s" / "peer-0.safetensors"), load_shard(tmp_path / "s2" / "peer-0.safetensors")
    assert np.array_equal(a.x, b.x) and np.array_equal(a.y, b.y) and a.classes == b.classes == 3


def test_bad_input_is_one_line_and_exit_1_without_a_traceback(tmp_path):
    src = _write(tmp_path, "j.csv", "age,label\n1,a\nabc,b\n2,a\n")
    r = run_cli(["data", "import", str(src), "--label", "label", "--out", str(tmp_path / "o.safetensors")])
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines() == [f"error: {src}: column 'age' is numeric but holds 'abc' in data row 2; "
                                             "fix the value or leave the cell empty (and use --missing impute)"]


def test_like_encodes_a_second_organization_as_the_first(tmp_path):
    first = tmp_path / "a.safetensors"
    import_data(str(_write(tmp_path, "a.csv", "n,c,label\n1,red,yes\n2,blue,no\n3,green,yes\n")), str(first), ImportOptions(label="label"))
    # Another hospital: other column order, fewer categories, a single class.
    second = _write(tmp_path, "b.csv", "n,label,c\n5,no,blue\n6,no,blue\n")
    r = _invoke(["data", "import", str(second), "--label", "label", "--like", str(first), "--out", str(tmp_path / "b.safetensors")])
    assert r.exit_code == 0, r.output
    a, b = load_shard(first), load_shard(tmp_path / "b.safetensors")
    assert b.info["feature_names"] == a.info["feature_names"] == ["n", "c=blue", "c=green", "c=red"]
    assert b.x.tolist() == [[5, 1, 0, 0], [6, 1, 0, 0]] and b.y.tolist() == [0, 0] and b.classes == 2
    bad = _write(tmp_path, "c.csv", "n,label,c\n5,no,purple\n")
    r = _invoke(["data", "import", str(bad), "--label", "label", "--like", str(first), "--out", str(tmp_path / "c.safetensors")])
    assert r.exit_code == 1 and "column 'c' holds 'purple', a category the reference shard does not have" in r.output
