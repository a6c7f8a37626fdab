"""Zoo (UCI, via R's mlbench): 101 animals, yes/no traits + leg count -> 7 animal types.

The table comes from Debian's ``r-cran-mlbench`` (``data/Zoo.rda``), read with ``pyreadr``. On
first use the loader fetches it itself (``apt-get download r-cran-mlbench`` + ``dpkg-deb -x``
into a cache folder, :func:`fetch_mlbench`; as root on a machine without package lists it runs
``apt-get update`` first); where apt is unavailable, pass the ``Zoo.rda`` file (or a folder
holding it, or the ``.deb``) as ``path``.

Concepts: the 15 boolean traits and the leg count one-hot (legs_0 … legs_8), which form the
one multi-concept group "legs". As for led7digit, ``x`` is a seeded noisy embedding of ``c``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import torch

from compress.core.errors import BadInputError
from evaluators.cbm.data.base import ConceptDataset, embed_concepts, make_splits

RDA_NAME = "Zoo.rda"


def cache_dir() -> Path:
    """Where fetched packages are unpacked: ``$COMPRESS_CACHE`` or ``~/.cache/compress``."""
    root = os.environ.get("COMPRESS_CACHE") or Path.home() / ".cache" / "compress"
    return Path(root) / "r-cran-mlbench"


def fetch_mlbench(target: Path | None = None) -> Path:
    """Download and unpack ``r-cran-mlbench`` into ``target``; return the path of ``Zoo.rda``."""
    target = target or cache_dir()
    found = sorted(target.rglob(RDA_NAME)) if target.is_dir() else []
    if found:
        return found[0]
    if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
        raise BadInputError(
            "Zoo needs apt-get and dpkg-deb to fetch r-cran-mlbench: pass --data-path to Zoo.rda"
        )
    with tempfile.TemporaryDirectory() as tmp:
        run = apt_download(Path(tmp))
        if "Unable to locate package" in run.stderr and os.geteuid() == 0:
            # a fresh machine has no package lists yet; `apt-get install` would need them too
            subprocess.run(["apt-get", "update", "-qq"], capture_output=True, check=False)
            run = apt_download(Path(tmp))
        debs = sorted(Path(tmp).glob("r-cran-mlbench_*.deb"))
        if run.returncode or not debs:
            reason = (run.stderr.strip().splitlines() or ["no .deb written"])[-1]
            raise BadInputError(
                f"apt-get download r-cran-mlbench failed ({reason}): "
                "run apt-get update, or pass --data-path to Zoo.rda"
            )
        return unpack_deb(debs[0], target)


def apt_download(folder: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["apt-get", "download", "r-cran-mlbench"], cwd=folder, capture_output=True, text=True
    )


def unpack_deb(deb: Path, target: Path) -> Path:
    """``dpkg-deb -x`` a downloaded package into ``target``; return the ``Zoo.rda`` inside."""
    target.mkdir(parents=True, exist_ok=True)
    subprocess.run(["dpkg-deb", "-x", str(deb), str(target)], check=True, capture_output=True)
    found = sorted(target.rglob(RDA_NAME))
    if not found:
        raise BadInputError(f"{deb} holds no {RDA_NAME}: pass --data-path to a Zoo.rda file")
    return found[0]


def resolve_rda(path: Path | None) -> Path:
    """Accept a ``Zoo.rda`` file, a folder holding one, an ``r-cran-mlbench`` ``.deb`` or None."""
    if path is None:
        return fetch_mlbench()
    path = Path(path)
    if path.suffix == ".deb" and path.is_file():
        return unpack_deb(path, cache_dir())
    if path.is_dir():
        found = sorted(path.rglob(RDA_NAME))
        if found:
            return found[0]
    if path.is_file():
        return path
    raise BadInputError(
        f"Zoo data {path} not found: pass a Zoo.rda file, a folder holding one, or omit it"
    )


def load_zoo(
    path: Path | None = None,
    seed: int = 0,
    input_dim: int = 16,
    wx_std: float = 1.0,
    z_std: float = 2.0,
) -> ConceptDataset:
    """Load Zoo as a concept dataset (split 70/15/15, seeded)."""
    import pyreadr

    rda = resolve_rda(path)
    frames = pyreadr.read_r(str(rda))
    if "Zoo" not in frames:
        raise BadInputError(f"{rda} holds no data frame named Zoo (found {list(frames)})")
    frame = frames["Zoo"]
    traits = [col for col in frame.columns if col not in ("legs", "type")]
    legs = sorted(int(v) for v in frame["legs"].unique())
    binary = torch.tensor(frame[traits].to_numpy(dtype=float), dtype=torch.float32)
    leg_index = torch.tensor([legs.index(int(v)) for v in frame["legs"]])
    one_hot = torch.nn.functional.one_hot(leg_index, len(legs)).float()
    c = torch.cat([binary, one_hot], dim=1)
    class_names = [str(v) for v in frame["type"].cat.categories]
    y = torch.tensor(frame["type"].cat.codes.to_numpy(dtype="int64"))
    generator = torch.Generator().manual_seed(seed)
    x = embed_concepts(c, input_dim, wx_std, z_std, generator)
    train, val, test = make_splits(x, c, y, (0.7, 0.15, 0.15), generator)
    n = len(traits)
    return ConceptDataset(
        name="zoo",
        train=train,
        val=val,
        test=test,
        concept_names=traits + [f"legs_{v}" for v in legs],
        class_names=class_names,
        groups=[[i] for i in range(n)] + [list(range(n, n + len(legs)))],
        group_names=traits + ["legs"],
    )
