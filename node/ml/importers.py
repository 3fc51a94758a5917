"""Turn an organization's own files into a ``Dataset`` that records its schema.

Formats: CSV and Parquet (a ``label`` column, the rest features), NumPy ``.npz`` (arrays ``x`` and
``y``), and image folders in torchvision's ImageFolder layout (one sub-folder per class, PNG or
JPEG). Every bad input is one ``ConfigError`` line that names the file, column or image.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ConfigError
from ..protocol.task import TASK_KINDS
from .data import DATASETS, Dataset, load_dataset, train_test_split

__all__ = ["ImportOptions", "import_source", "with_holdout", "IMAGE_SUFFIXES"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
TABLE_SUFFIXES = (".csv", ".parquet", ".pq")


@dataclass(frozen=True)
class ImportOptions:
    label: str | None = None  # the label column of a table
    kind: str = "classification"  # or "regression" (a numeric label, MSE)
    missing: str = "refuse"  # or "impute": median for numbers, mode for categories
    categorical: str = "onehot"  # or "ordinal"
    image_size: tuple[int, int] | None = None  # (H, W); default: the first image's size
    grayscale: bool = False
    like: dict | None = None  # another shard's schema: encode exactly as it did (--like SHARD)

    def __post_init__(self):
        if self.kind not in TASK_KINDS:
            raise ConfigError(f"unknown task kind {self.kind!r} (known: {', '.join(TASK_KINDS)})")
        if self.missing not in ("refuse", "impute"):
            raise ConfigError(f"--missing must be refuse or impute, got {self.missing!r}")
        if self.categorical not in ("onehot", "ordinal"):
            raise ConfigError(f"--categorical must be onehot or ordinal, got {self.categorical!r}")
        if self.image_size is not None and (len(self.image_size) != 2 or min(self.image_size) < 1 or max(self.image_size) > 4096):
            raise ConfigError(f"--image-size must be H,W with sides between 1 and 4096, got {self.image_size}")


def import_source(source: str | Path, opts: ImportOptions = ImportOptions()) -> Dataset:
    """Read ``source`` (a built-in dataset name, a table, an .npz or an image folder)."""
    name = str(source)
    path = Path(source).expanduser()
    if name in DATASETS and not path.exists():
        return load_dataset(name)
    if not path.exists():
        raise ConfigError(f"{source} does not exist (give a CSV, Parquet or .npz file, an image folder, "
                          f"or a built-in dataset: {', '.join(DATASETS)})")
    if path.is_dir():
        return _image_folder(path, opts)
    suffix = path.suffix.lower()
    if suffix in TABLE_SUFFIXES:
        return _table(path, opts)
    if suffix == ".npz":
        return _npz(path, opts)
    raise ConfigError(f"{source}: unknown format {suffix or '(no suffix)'!r}; fedchain imports .csv, .parquet, .npz and image folders")


def with_holdout(ds: Dataset, fraction: float, *, seed: int = 0) -> Dataset:
    """``ds`` with a stratified ``fraction`` of it kept aside as the shard's local validation split."""
    if not 0 < fraction < 1:
        raise ConfigError(f"--holdout must be a fraction in (0, 1), got {fraction}")
    train, hold = train_test_split(ds, test_fraction=fraction, seed=seed)
    if len(hold.y) == 0 or len(train.y) == 0:
        raise ConfigError(f"a holdout of {fraction} of {len(ds.y)} samples leaves nothing on one side")
    return Dataset(ds.name, train.x, train.y, ds.classes, hold.x, hold.y, ds.info)


# ---------------------------------------------------------------------------- tables
def _read_table(path: Path):
    import pandas as pd

    try:
        if path.suffix.lower() == ".csv":
            return pd.read_csv(path)
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise ConfigError("reading Parquet needs the package 'pyarrow' (pip install pyarrow)") from None
        return pd.read_parquet(path)
    except ConfigError:
        raise
    except pd.errors.EmptyDataError:
        raise ConfigError(f"{path} is empty") from None
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError, OSError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"cannot read {path}: {first}") from None
    except Exception as exc:  # pyarrow's own errors
        raise ConfigError(f"cannot read {path}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from None


def _table(path: Path, opts: ImportOptions) -> Dataset:
    import pandas as pd

    if not opts.label:
        raise ConfigError(f"{path} is a table: say which column holds the label with --label COLUMN")
    df = _read_table(path)
    df.columns = [str(c).strip() for c in df.columns]
    if len(df) == 0:
        raise ConfigError(f"{path} has a header but no rows")
    if opts.label not in df.columns:
        raise ConfigError(f"{path} has no label column {opts.label!r} (columns: {', '.join(df.columns)})")
    if len(df.columns) < 2:
        raise ConfigError(f"{path} has only the label column {opts.label!r}, no features")
    dup = df.columns[df.columns.duplicated()].tolist()
    if dup:
        raise ConfigError(f"{path} has the column {dup[0]!r} twice")
    like = opts.like
    if like is not None:
        if like.get("kind", "classification") != opts.kind:
            raise ConfigError(f"the reference shard holds {like.get('kind', 'classification')} data, not {opts.kind}")
        if "encoding" not in like:
            raise ConfigError("the reference shard records no column encoding (it was not imported from a table)")
        want = list(like.get("columns") or like["encoding"])
        have = [c for c in df.columns if c != opts.label]
        if sorted(want) != sorted(have):
            extra, lacking = sorted(set(have) - set(want)), sorted(set(want) - set(have))
            raise ConfigError(f"{path} has other columns than the reference shard"
                              + (f"; extra: {', '.join(extra)}" if extra else "") + (f"; missing: {', '.join(lacking)}" if lacking else ""))
    y, label_info = _labels(df[opts.label], path, opts)
    if like is not None and opts.kind == "classification":
        y, label_info = _relabel(y, label_info["label_names"], list(like.get("label_names", [])), path)
    columns, names, encoding = [], [], {}
    for col in (want if like is not None else df.columns):
        if col == opts.label:
            continue
        ref = like["encoding"][col] if like is not None else None
        if ref is not None and ref.get("type") in ("onehot", "ordinal"):
            values, col_names, enc = _categorical(df[col], col, path, opts, ref)
        else:
            values, col_names, enc = _feature(df[col], col, path, opts)
        columns.append(values)
        names += col_names
        encoding[col] = enc
    x = np.column_stack(columns).astype(np.float32)
    if not np.isfinite(x).all():
        bad = names[int(np.flatnonzero(~np.isfinite(x).all(0))[0])]
        raise ConfigError(f"{path}: column {bad!r} holds an infinite or too large value")
    info = {"kind": opts.kind, "feature_names": names, "columns": list(encoding), "encoding": encoding, "label": opts.label,
            **label_info}
    classes = len(label_info["label_names"]) if opts.kind == "classification" else 1
    if like is not None and names != list(like.get("feature_names", names)):
        raise ConfigError(f"{path} encodes to features {names} but the reference shard has {like.get('feature_names')}")
    return Dataset(path.stem, x, y, classes, info=info)


def _relabel(y: np.ndarray, names: list[str], reference: list[str], path: Path):
    """Labels numbered as the reference shard numbers them (a class it lacks stays unused)."""
    unknown = [n for n in names if n not in reference]
    if unknown:
        raise ConfigError(f"{path} has label {unknown[0]!r}, which the reference shard's labels {reference} do not include")
    index = np.asarray([reference.index(n) for n in names], dtype=np.int64)
    return index[y], {"label_names": reference}


def _labels(col, path: Path, opts: ImportOptions):
    """(labels, label info); with a reference shard one class is enough (a peer may hold one)."""
    import pandas as pd

    if col.isna().any():
        row = int(np.flatnonzero(col.isna().to_numpy())[0])
        raise ConfigError(f"{path}: the label column {col.name!r} is missing in {int(col.isna().sum())} rows (first: data row {row + 1}); "
                          f"drop those rows, labels are never imputed")
    if opts.kind == "regression":
        num = pd.to_numeric(col, errors="coerce")
        if num.isna().any():
            row = int(np.flatnonzero(num.isna().to_numpy())[0])
            raise ConfigError(f"{path}: regression needs a numeric label, but column {col.name!r} holds {col.iloc[row]!r} in data row {row + 1}")
        return num.to_numpy(dtype=np.float32), {"label_names": []}
    values = col.to_numpy()
    if pd.api.types.is_float_dtype(col) and not np.all(np.mod(values, 1) == 0):
        raise ConfigError(f"{path}: the label column {col.name!r} holds fractional numbers; for a numeric target use --task-kind regression")
    if pd.api.types.is_numeric_dtype(col):
        values = values.astype(np.int64)
    names = sorted({str(v) for v in values}, key=lambda v: (0, int(v)) if _is_int(v) else (1, v))
    if len(names) < 2 and opts.like is None:
        raise ConfigError(f"{path}: the label column {col.name!r} holds a single class ({names[0]!r}); classification needs at least two")
    if len(names) > 10_000:
        raise ConfigError(f"{path}: the label column {col.name!r} holds {len(names)} distinct values; for a numeric target use --task-kind regression")
    index = {n: i for i, n in enumerate(names)}
    return np.asarray([index[str(v)] for v in values], dtype=np.int64), {"label_names": names}


def _is_int(v: str) -> bool:
    try:
        int(v)
        return True
    except ValueError:
        return False


def _feature(col, name: str, path: Path, opts: ImportOptions):
    """(values, feature names, encoding record) of one column."""
    import pandas as pd

    missing = col.isna()
    if pd.api.types.is_bool_dtype(col):
        col = col.astype(float)
    if pd.api.types.is_numeric_dtype(col):
        num = col.astype(float)
    else:
        num = pd.to_numeric(col, errors="coerce")
        bad = num.isna() & ~missing
        if bad.any() and bad.sum() < (~missing).sum():
            # Mostly numbers with some text: junk, not a category.
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raise ConfigError(f"{path}: column {name!r} is numeric but holds {col.iloc[row]!r} in data row {row + 1}; "
                              f"fix the value or leave the cell empty (and use --missing impute)")
        if bad.any():
            return _categorical(col, name, path, opts)
    if missing.all():
        raise ConfigError(f"{path}: column {name!r} is empty in every row")
    if missing.any():
        if opts.missing == "refuse":
            row = int(np.flatnonzero(missing.to_numpy())[0])
            raise ConfigError(f"{path}: column {name!r} has {int(missing.sum())} missing values (first: data row {row + 1}); "
                              f"fill them in, or pass --missing impute to use the column's median")
        fill = float(num.median())
        return num.fillna(fill).to_numpy(), [name], {"type": "numeric", "impute": fill}
    return num.to_numpy(), [name], {"type": "numeric"}


def _categorical(col, name: str, path: Path, opts: ImportOptions, ref: dict | None = None):
    missing = col.isna()
    if missing.any():
        if opts.missing == "refuse":
            row = int(np.flatnonzero(missing.to_numpy())[0])
            raise ConfigError(f"{path}: column {name!r} has {int(missing.sum())} missing values (first: data row {row + 1}); "
                              f"fill them in, or pass --missing impute to use the column's most frequent value")
        fill = str(col.dropna().astype(str).mode().iloc[0])
        col = col.astype(object).where(~missing, fill)
    else:
        fill = None
    values = col.astype(str).str.strip()
    categories = sorted(values.unique())
    if ref is not None:
        unknown = [c for c in categories if c not in ref["categories"]]
        if unknown:
            raise ConfigError(f"{path}: column {name!r} holds {unknown[0]!r}, a category the reference shard does not have "
                              f"({', '.join(ref['categories'])})")
        categories = list(ref["categories"])
        opts = ImportOptions(label=opts.label, kind=opts.kind, missing=opts.missing, categorical=ref["type"])
    if len(categories) > 1_000:
        raise ConfigError(f"{path}: column {name!r} holds {len(categories)} distinct texts; a categorical column has at most 1000 "
                          f"(drop free-text and identifier columns before importing)")
    enc = {"type": opts.categorical, "categories": categories, **({"impute": fill} if fill is not None else {})}
    if opts.categorical == "ordinal":
        index = {c: i for i, c in enumerate(categories)}
        return values.map(index).to_numpy(dtype=float), [name], enc
    onehot = np.stack([(values == c).to_numpy(dtype=float) for c in categories], axis=1)
    return onehot, [f"{name}={c}" for c in categories], enc


# ---------------------------------------------------------------------------- arrays
def _npz(path: Path, opts: ImportOptions) -> Dataset:
    try:
        with np.load(path, allow_pickle=False) as z:
            if "x" not in z.files or "y" not in z.files:
                raise ConfigError(f"{path} holds arrays {z.files}; an .npz to import holds x (features or images) and y (labels)")
            x, y = z["x"], z["y"]
    except ConfigError:
        raise
    except Exception as exc:
        raise ConfigError(f"cannot read {path} as NumPy .npz: {exc}") from None
    if x.ndim == 3:  # N x H x W grayscale images
        x = x[:, None]
    if x.ndim not in (2, 4) or y.ndim != 1 or len(x) != len(y) or len(y) == 0:
        raise ConfigError(f"{path}: x has shape {x.shape} and y {y.shape}; need x of N x F (or N x C x H x W) and y of N, N > 0")
    if not (np.issubdtype(x.dtype, np.number) or x.dtype == bool):
        raise ConfigError(f"{path}: x has dtype {x.dtype}; features must be numbers")
    x = x.astype(np.float32)
    if not np.isfinite(x).all():
        raise ConfigError(f"{path}: x holds NaN or infinite values; fix them before importing")
    if opts.kind == "regression":
        if not np.issubdtype(y.dtype, np.number):
            raise ConfigError(f"{path}: regression needs numeric y, got dtype {y.dtype}")
        return Dataset(path.stem, x, y.astype(np.float32), 1, info={"kind": "regression"})
    if np.issubdtype(y.dtype, np.floating) and not np.all(np.mod(y, 1) == 0):
        raise ConfigError(f"{path}: y holds fractional numbers; for a numeric target use --task-kind regression")
    names = sorted({str(v) for v in y.tolist()}, key=lambda v: (0, int(v)) if _is_int(v) else (1, v))
    if len(names) < 2:
        raise ConfigError(f"{path}: y holds a single class; classification needs at least two")
    index = {n: i for i, n in enumerate(names)}
    labels = np.asarray([index[str(v)] for v in y.tolist()], dtype=np.int64)
    info = {"kind": "classification", "label_names": names}
    if x.ndim == 2:
        info["feature_names"] = [f"x{i}" for i in range(x.shape[1])]
    return Dataset(path.stem, x, labels, len(names), info=info)


# ---------------------------------------------------------------------------- images
def _image_folder(path: Path, opts: ImportOptions) -> Dataset:
    from PIL import Image, UnidentifiedImageError

    if opts.kind != "classification":
        raise ConfigError(f"{path}: an image folder is labeled by its sub-folders, so the task is classification")
    classes = sorted(d.name for d in path.iterdir() if d.is_dir() and not d.name.startswith("."))
    like = opts.like
    if like is not None:
        if "image" not in like:
            raise ConfigError("the reference shard records no image settings (it was not imported from an image folder)")
        unknown = [c for c in classes if c not in like.get("label_names", [])]
        if unknown:
            raise ConfigError(f"{path} has class folder {unknown[0]!r}, which the reference shard's classes do not include")
        opts = ImportOptions(image_size=tuple(like["image"]["size"]), grayscale=like["image"]["mode"] == "L")
    if len(classes) < 2 and like is None:
        raise ConfigError(f"{path} has {len(classes)} class folders; an image folder holds one sub-folder per class "
                          f"(at least two), each with PNG or JPEG images")
    names = list(like["label_names"]) if like is not None else classes
    files: list[tuple[Path, int]] = []
    for c in classes:
        i = names.index(c)
        found = sorted(f for f in (path / c).rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
        if not found:
            raise ConfigError(f"{path / c} holds no PNG or JPEG images")
        files += [(f, i) for f in found]
    mode = "L" if opts.grayscale else "RGB"
    size = opts.image_size  # (H, W)
    xs = []
    for f, _ in files:
        try:
            with Image.open(f) as img:
                img = img.convert(mode)
                if size is None:
                    size = (img.height, img.width)
                if (img.height, img.width) != size:
                    img = img.resize((size[1], size[0]), Image.Resampling.BILINEAR)
                arr = np.asarray(img, dtype=np.float32) / 255.0
        except (UnidentifiedImageError, OSError, ValueError) as exc:
            raise ConfigError(f"cannot read image {f}: {exc}") from None
        xs.append(arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1))
    x = np.stack(xs).astype(np.float32)
    y = np.asarray([label for _, label in files], dtype=np.int64)
    info = {"kind": "classification", "label_names": names, "image": {"mode": mode, "size": list(size), "scale": "1/255"}}
    return Dataset(path.name, x, y, len(names), info=info)
