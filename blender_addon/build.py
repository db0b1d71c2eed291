"""Build the ShapeBridge Blender extension zip: ``python -m blender_addon.build --out dist``.

``make addon`` runs this. The result, ``dist/shapebridge-<version>.zip``, installs in
Blender 4.2+ (Preferences > Get Extensions > Install from Disk). Blender 3.4-4.1 install
the same zip as a legacy add-on through ``bl_info`` (the bundled wheels are then unused:
pyzmq and msgpack must be installed into that Blender's Python by hand).

Packaging notes (the decisions and why):

- Layout. Blender expects the package files at the zip root: ``blender_manifest.toml``,
  ``__init__.py`` and the sub-packages, plus ``wheels/*.whl``. Everything under
  ``blender_addon/`` goes in except ``__pycache__``/``*.pyc``, dot-files, this
  ``build.py`` and a stray ``wheels/`` folder. Inside Blender the package is imported as
  ``bl_ext.<repo>.shapebridge``, so add-on code must use relative imports.
- Wheels. pyzmq and msgpack (the pins in `WHEEL_REQUIREMENTS`) for CPython 3.11
  (Blender 4.2-5.0) and 3.13 (Blender 5.1+) on linux-x64, windows-x64, macos-arm64 and
  macos-x64, fetched with ``pip download --only-binary=:all: --no-deps`` into the cache
  ``build/wheels/`` (a later build reuses the cache and needs no network). pyzmq ships a
  ``cp312-abi3`` wheel that serves 3.13; macOS pyzmq wheels are ``universal2`` and serve
  both Mac platforms (one file). ``--wheel-dir DIR`` builds offline from a folder of
  wheels. Which wheel serves which (Python, platform) is decided here from the wheel
  file names (not from pip's output), so cache, offline folder and fresh downloads all
  go through the same selection, and a missing combination is a clear error.
- Manifest. The source manifest ends with a generated block (``platforms``, ``wheels``)
  between ``# BEGIN GENERATED`` / ``# END GENERATED`` markers; the packaged copy gets the
  block rewritten to list exactly the wheels bundled. ``--update-manifest`` writes the
  block back into ``blender_addon/blender_manifest.toml`` (do this after changing pins).
- Zip writer. We write the zip ourselves instead of calling the validator's own
  ``build`` sub-command, because (a) the build must work where the ``bpy`` wheel (which
  carries the validator) is not installed, (b) the archive is reproducible (sorted
  entries, fixed timestamps, so its hash only changes with its content), and (c) a
  per-platform build (``--split-platforms``, for extensions.blender.org's size limits)
  is simply the same writer with one platform's wheels and ``platforms = [that one]``.
  The entries match what ``blender_ext.py build`` produces (files at the root, wheels
  stored uncompressed).
- Validation. Each zip is then checked by Blender's own validator, ``blender_ext.py
  validate`` from the ``bpy`` wheel, with Blender's list of valid tags (what
  ``blender --command extension validate`` does); its output is printed and a failure
  fails the build. Without ``bpy`` the validation is skipped with a message. We also
  check that every listed wheel is in the zip, which ``validate`` does not.
"""

from __future__ import annotations

import argparse
import importlib.util
import re
import subprocess
import sys
import tomllib
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

ADDON_DIR = Path(__file__).resolve().parent
REPO_ROOT = ADDON_DIR.parent
MANIFEST_NAME = "blender_manifest.toml"
DEFAULT_CACHE_DIR = REPO_ROOT / "build" / "wheels"

# Runtime dependencies bundled as wheels (the versions the test environment runs).
WHEEL_REQUIREMENTS: tuple[str, ...] = ("pyzmq==27.3.0", "msgpack==1.2.4")
# CPython versions of the supported Blender releases: 4.2-5.0 ship 3.11, 5.1+ ships 3.13.
PYTHON_VERSIONS: tuple[str, ...] = ("3.11", "3.13")
# Blender platform -> pip ``--platform`` tags to ask for (pip also accepts older ones).
PLATFORM_PIP_TAGS: dict[str, tuple[str, ...]] = {
    "linux-x64": ("manylinux_2_28_x86_64", "manylinux2014_x86_64"),
    "windows-x64": ("win_amd64",),
    "macos-arm64": ("macosx_11_0_arm64",),
    "macos-x64": ("macosx_11_0_x86_64",),
}
# Oldest OS each Blender 4.2+ platform runs on: glibc 2.28 on Linux, macOS 11.
_MAX_GLIBC = (2, 28)
_MAX_MACOS = (11, 0)
_LEGACY_MANYLINUX = {"manylinux1": (2, 5), "manylinux2010": (2, 12), "manylinux2014": (2, 17)}

_GENERATED_RE = re.compile(
    r"(?P<begin>^# BEGIN GENERATED[^\n]*\n)(?P<body>.*?)(?P<end>^# END GENERATED[^\n]*$)",
    re.MULTILINE | re.DOTALL,
)
# Fixed timestamp for reproducible archives (the earliest a zip can store).
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)


class BuildError(RuntimeError):
    """The extension could not be built; the message says what to do."""


@dataclass(frozen=True)
class WheelName:
    """The parts of a wheel file name (PEP 427) that decide where it installs."""

    filename: str
    name: str  # normalised project name (lower case, "-" and "." as "_")
    version: str
    python_tags: frozenset[str]
    abi_tags: frozenset[str]
    platform_tags: frozenset[str]

    @classmethod
    def parse(cls, filename: str) -> WheelName:
        """Split ``name-version[-build]-python-abi-platform.whl``; ValueError if malformed."""
        if not filename.endswith(".whl"):
            raise ValueError(f"{filename!r} is not a wheel file (no .whl suffix).")
        parts = filename[: -len(".whl")].split("-")
        if len(parts) not in (5, 6):
            raise ValueError(f"{filename!r} is not a valid wheel file name (PEP 427).")
        return cls(
            filename=filename,
            name=_normalise(parts[0]),
            version=parts[1],
            python_tags=frozenset(parts[-3].split(".")),
            abi_tags=frozenset(parts[-2].split(".")),
            platform_tags=frozenset(parts[-1].split(".")),
        )

    def python_rank(self, python: str) -> int | None:
        """How well the wheel fits CPython `python` ("3.13"): 0 exact, 1 abi3, 2 pure, None."""
        major, minor = (int(x) for x in python.split("."))
        exact = f"cp{major}{minor}"
        if exact in self.python_tags and exact in self.abi_tags:
            return 0
        if "abi3" in self.abi_tags:
            for tag in self.python_tags:
                m = re.fullmatch(rf"cp{major}(\d+)", tag)
                if m and int(m.group(1)) <= minor:
                    return 1
        pure = {f"py{major}", f"py{major}{minor}"}
        if "none" in self.abi_tags and self.python_tags & pure:
            return 2
        return None

    def platforms(self) -> set[str]:
        """Blender platforms (keys of PLATFORM_PIP_TAGS) this wheel installs on."""
        out: set[str] = set()
        for tag in self.platform_tags:
            if tag == "any":
                return set(PLATFORM_PIP_TAGS)
            if tag == "win_amd64":
                out.add("windows-x64")
            elif m := re.fullmatch(r"(manylinux1|manylinux2010|manylinux2014)_x86_64", tag):
                if _LEGACY_MANYLINUX[m.group(1)] <= _MAX_GLIBC:
                    out.add("linux-x64")
            elif m := re.fullmatch(r"manylinux_(\d+)_(\d+)_x86_64", tag):
                if (int(m.group(1)), int(m.group(2))) <= _MAX_GLIBC:
                    out.add("linux-x64")
            elif m := re.fullmatch(r"macosx_(\d+)_(\d+)_(\w+)", tag):
                if (int(m.group(1)), int(m.group(2))) > _MAX_MACOS:
                    continue
                arch = m.group(3)
                if arch in ("arm64", "universal2"):
                    out.add("macos-arm64")
                if arch in ("x86_64", "intel", "universal2", "universal"):
                    out.add("macos-x64")
        return out


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name).lower()


def _parse_requirement(req: str) -> tuple[str, str]:
    m = re.fullmatch(r"\s*([A-Za-z0-9._-]+)\s*==\s*([A-Za-z0-9.+!_-]+)\s*", req)
    if not m:
        raise ValueError(f"Requirement {req!r} must pin one version, like 'pyzmq==27.3.0'.")
    return _normalise(m.group(1)), m.group(2)


def select_wheels(
    wheel_dirs: Iterable[Path],
    requirements: Sequence[str] = WHEEL_REQUIREMENTS,
    pythons: Sequence[str] = PYTHON_VERSIONS,
    platforms: Sequence[str] = tuple(PLATFORM_PIP_TAGS),
) -> tuple[dict[str, list[Path]], list[tuple[str, str, str]]]:
    """Pick one wheel per (requirement, Python, platform) from the given folders.

    Returns:
        ({platform: sorted wheel paths for it}, [(requirement, python, platform) missing]).
        Among fitting wheels, an exact ``cpXY`` build beats ``abi3`` beats pure Python;
        ties go to the file name that sorts first (deterministic).
    """
    candidates: list[tuple[WheelName, Path]] = []
    for folder in wheel_dirs:
        if folder.is_dir():
            for path in sorted(folder.glob("*.whl")):
                try:
                    candidates.append((WheelName.parse(path.name), path))
                except ValueError:
                    continue
    chosen: dict[str, set[Path]] = {p: set() for p in platforms}
    missing: list[tuple[str, str, str]] = []
    for req in requirements:
        name, version = _parse_requirement(req)
        for python in pythons:
            for platform in platforms:
                fits = []
                for wheel, path in candidates:
                    if wheel.name != name or wheel.version != version:
                        continue
                    rank = wheel.python_rank(python)
                    if rank is not None and platform in wheel.platforms():
                        fits.append((rank, wheel.filename, path))
                if fits:
                    chosen[platform].add(min(fits)[2])
                else:
                    missing.append((req, python, platform))
    return {p: sorted(paths, key=lambda x: x.name) for p, paths in chosen.items()}, missing


def download_wheels(
    cache_dir: Path, missing: Sequence[tuple[str, str, str]], python_exe: str = sys.executable
) -> None:
    """``pip download`` the missing (requirement, Python, platform) wheels into `cache_dir`."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    groups: dict[tuple[str, str], list[str]] = {}
    for req, python, platform in missing:
        groups.setdefault((python, platform), []).append(req)
    for (python, platform), reqs in sorted(groups.items()):
        cmd = [python_exe, "-m", "pip", "download", "--quiet", "--disable-pip-version-check"]
        cmd += ["--only-binary=:all:", "--no-deps", "--implementation", "cp"]
        cmd += ["--python-version", python, "--dest", str(cache_dir)]
        for tag in PLATFORM_PIP_TAGS[platform]:
            cmd += ["--platform", tag]
        print(f"downloading {', '.join(reqs)} for CPython {python} on {platform}", flush=True)
        proc = subprocess.run(cmd + sorted(reqs), capture_output=True, text=True)
        if proc.returncode != 0:
            raise BuildError(
                f"pip download failed for CPython {python} on {platform} "
                f"(exit {proc.returncode}):\n{proc.stderr.strip()}\n"
                "Check the network, or build offline with --wheel-dir DIR holding the wheels."
            )


def generated_manifest(manifest_text: str, platforms: Sequence[str], wheels: Sequence[str]) -> str:
    """Return `manifest_text` with its generated block listing `platforms` and `wheels`.

    Args:
        manifest_text: the source ``blender_manifest.toml``, with the BEGIN/END markers.
        platforms: Blender platform names, e.g. "linux-x64".
        wheels: zip-relative wheel paths, e.g. "./wheels/pyzmq-...whl".
    """
    match = _GENERATED_RE.search(manifest_text)
    if match is None:
        raise BuildError(
            f"{MANIFEST_NAME} lacks the '# BEGIN GENERATED' ... '# END GENERATED' block that "
            "build.py rewrites; restore it at the end of the file (after all top-level keys)."
        )

    def toml_list(key: str, items: Sequence[str]) -> str:
        if not items:
            return f"{key} = []\n"
        return f"{key} = [\n" + "".join(f'  "{item}",\n' for item in items) + "]\n"

    body = toml_list("platforms", platforms) + toml_list("wheels", wheels)
    return manifest_text[: match.start("body")] + body + manifest_text[match.end("body") :]


def package_files(source_dir: Path) -> list[tuple[Path, str]]:
    """(absolute path, zip name) of the add-on files to ship, sorted by zip name.

    Skips ``__pycache__``, ``*.pyc``/``*.pyo``, dot-files, ``build.py``, ``wheels/`` and
    the manifest (written separately).
    """
    out = []
    for path in source_dir.rglob("*"):
        if not path.is_file():
            continue
        rel = path.relative_to(source_dir)
        parts = rel.parts
        if any(p == "__pycache__" or p.startswith(".") for p in parts):
            continue
        if path.suffix in (".pyc", ".pyo"):
            continue
        if len(parts) == 1 and parts[0] in ("build.py", MANIFEST_NAME):
            continue
        if parts[0] == "wheels":
            continue
        out.append((path, rel.as_posix()))
    if not any(name == "__init__.py" for _, name in out):
        raise BuildError(
            f"{source_dir / '__init__.py'} is missing: an add-on extension needs the package's "
            "__init__.py with register() and unregister()."
        )
    return sorted(out, key=lambda item: item[1])


def write_zip(
    zip_path: Path, files: Sequence[tuple[Path, str]], wheels: Sequence[Path], manifest: str
) -> None:
    """Write a reproducible extension zip: manifest, package files, then ``wheels/*.whl``."""
    zip_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = zip_path.with_name("." + zip_path.name)

    def add(zf: zipfile.ZipFile, name: str, data: bytes, stored: bool) -> None:
        info = zipfile.ZipInfo(name, date_time=_ZIP_DATE)
        info.external_attr = 0o644 << 16
        info.compress_type = zipfile.ZIP_STORED if stored else zipfile.ZIP_DEFLATED
        zf.writestr(info, data, compresslevel=None if stored else 9)

    try:
        with zipfile.ZipFile(tmp, "w") as zf:
            add(zf, MANIFEST_NAME, manifest.encode("utf-8"), stored=False)
            for path, name in files:
                add(zf, name, path.read_bytes(), stored=False)
            for wheel in wheels:
                add(zf, f"wheels/{wheel.name}", wheel.read_bytes(), stored=True)
        tmp.replace(zip_path)
    finally:
        tmp.unlink(missing_ok=True)


def find_validator() -> tuple[Path, Path | None] | None:
    """Blender's extension CLI (``blender_ext.py``) and tag list from the installed bpy wheel.

    Returns (validator path, tags file or None), or None when bpy is not installed.
    The bpy module is located, not imported.
    """
    spec = importlib.util.find_spec("bpy")
    if spec is None or not spec.submodule_search_locations:
        return None
    for root in spec.submodule_search_locations:
        scripts = sorted(Path(root).glob("*/scripts"), reverse=True)
        for folder in scripts:
            cli = folder / "addons_core" / "bl_pkg" / "cli" / "blender_ext.py"
            if cli.is_file():
                tags = folder / "modules" / "_bpy_internal" / "extensions" / "tags.py"
                return cli, (tags if tags.is_file() else None)
    return None


def validate_zip(zip_path: Path, validator: Path, tags: Path | None) -> str:
    """Run ``blender_ext.py validate`` on `zip_path`; return its output, BuildError on failure."""
    cmd = [sys.executable, str(validator), "validate"]
    if tags is not None:
        cmd += ["--valid-tags", str(tags)]
    proc = subprocess.run(cmd + [str(zip_path)], capture_output=True, text=True)
    output = (proc.stdout + proc.stderr).strip()
    if proc.returncode != 0:
        raise BuildError(f"Blender's validator rejected {zip_path.name}:\n{output}")
    return output


def check_zip(zip_path: Path) -> None:
    """Check what the validator does not: every wheel the manifest lists is in the zip."""
    with zipfile.ZipFile(zip_path) as zf:
        manifest = tomllib.loads(zf.read(MANIFEST_NAME).decode("utf-8"))
        names = set(zf.namelist())
    for wheel in manifest.get("wheels", []):
        if wheel.removeprefix("./") not in names:
            raise BuildError(f"{zip_path.name}: the manifest lists {wheel} but the zip lacks it.")


def build(
    out_dir: Path,
    platforms: Sequence[str] = tuple(PLATFORM_PIP_TAGS),
    pythons: Sequence[str] = PYTHON_VERSIONS,
    requirements: Sequence[str] = WHEEL_REQUIREMENTS,
    wheel_dir: Path | None = None,
    cache_dir: Path = DEFAULT_CACHE_DIR,
    split_platforms: bool = False,
    validator: Path | None = None,
    update_manifest: bool = False,
    source_dir: Path = ADDON_DIR,
) -> list[Path]:
    """Build the extension zip(s) into `out_dir` and validate them; return their paths.

    Args:
        out_dir: output folder; gets ``<id>-<version>.zip`` (or one zip per platform,
            ``<id>-<version>-<platform_with_underscores>.zip``, with `split_platforms`).
        platforms: Blender platforms to bundle wheels for (keys of PLATFORM_PIP_TAGS).
        pythons: CPython versions ("3.11") to bundle wheels for.
        requirements: pinned wheels to bundle ("name==version").
        wheel_dir: offline mode: take wheels only from this folder, never download.
        cache_dir: download cache, reused by later builds.
        split_platforms: one zip per platform instead of one for all.
        validator: path to Blender's ``blender_ext.py``; default: found in the bpy wheel,
            validation skipped (with a message) when there is none.
        update_manifest: also rewrite the generated block of the source manifest.
        source_dir: the add-on package folder (the one holding the manifest).
    """
    unknown = [p for p in platforms if p not in PLATFORM_PIP_TAGS]
    if unknown or not platforms:
        raise ValueError(
            f"Unknown or no platforms {unknown}; choose from {', '.join(PLATFORM_PIP_TAGS)}."
        )
    for python in pythons:
        if not re.fullmatch(r"3\.\d+", python):
            raise ValueError(f"Python version {python!r} must look like '3.11'.")
    manifest_path = source_dir / MANIFEST_NAME
    if not manifest_path.is_file():
        raise BuildError(f"{manifest_path} is missing.")
    manifest_text = manifest_path.read_text(encoding="utf-8")
    manifest = tomllib.loads(manifest_text)
    files = package_files(source_dir)

    if wheel_dir is not None:
        if not wheel_dir.is_dir():
            raise ValueError(f"--wheel-dir {wheel_dir} is not a folder.")
        selected, missing = select_wheels([wheel_dir], requirements, pythons, platforms)
    else:
        selected, missing = select_wheels([cache_dir], requirements, pythons, platforms)
        if missing:
            download_wheels(cache_dir, missing)
            selected, missing = select_wheels([cache_dir], requirements, pythons, platforms)
    if missing:
        lines = "\n".join(f"  {r} for CPython {py} on {p}" for r, py, p in missing)
        raise BuildError(f"No wheel found for:\n{lines}")

    def wheel_refs(paths: Iterable[Path]) -> list[str]:
        return [f"./wheels/{p.name}" for p in sorted(set(paths), key=lambda x: x.name)]

    all_wheels = sorted({w for ws in selected.values() for w in ws}, key=lambda x: x.name)
    if update_manifest:
        manifest_path.write_text(
            generated_manifest(manifest_text, list(platforms), wheel_refs(all_wheels)),
            encoding="utf-8",
        )

    stem = f"{manifest['id']}-{manifest['version']}"
    if split_platforms:
        jobs = [
            (out_dir / f"{stem}-{p.replace('-', '_')}.zip", [p], selected[p]) for p in platforms
        ]
    else:
        jobs = [(out_dir / f"{stem}.zip", list(platforms), all_wheels)]

    found = (validator, None) if validator is not None else find_validator()
    if found is None:
        print("bpy is not installed: skipping Blender's extension validator.", flush=True)
    built = []
    for zip_path, zip_platforms, wheels in jobs:
        text = generated_manifest(manifest_text, zip_platforms, wheel_refs(wheels))
        write_zip(zip_path, files, wheels, text)
        check_zip(zip_path)
        if found is not None:
            print(validate_zip(zip_path, found[0], found[1]), flush=True)
        print(f"built {zip_path} ({zip_path.stat().st_size / 1e6:.2f} MB, {len(wheels)} wheels)")
        built.append(zip_path)
    return built


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Command-line options of the build (shared by ``python -m blender_addon.build``)."""
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "dist", help="output folder")
    parser.add_argument(
        "--platforms",
        default=",".join(PLATFORM_PIP_TAGS),
        help=f"comma-separated Blender platforms (default: all of {', '.join(PLATFORM_PIP_TAGS)})",
    )
    parser.add_argument(
        "--python",
        default=",".join(PYTHON_VERSIONS),
        help="comma-separated CPython versions to bundle wheels for (default: %(default)s)",
    )
    parser.add_argument(
        "--wheel-dir", type=Path, help="build offline from the wheels in this folder"
    )
    parser.add_argument(
        "--cache-dir", type=Path, default=DEFAULT_CACHE_DIR, help="download cache folder"
    )
    parser.add_argument("--split-platforms", action="store_true", help="write one zip per platform")
    parser.add_argument("--validator", type=Path, help="path to Blender's blender_ext.py")
    parser.add_argument(
        "--update-manifest",
        action="store_true",
        help=f"rewrite the generated block of blender_addon/{MANIFEST_NAME} to match the build",
    )


def run(args: argparse.Namespace) -> int:
    """Build from parsed arguments; print a one-line error and return 1 on failure."""
    try:
        build(
            out_dir=args.out,
            platforms=[p.strip() for p in args.platforms.split(",") if p.strip()],
            pythons=[p.strip() for p in args.python.split(",") if p.strip()],
            wheel_dir=args.wheel_dir,
            cache_dir=args.cache_dir,
            split_platforms=args.split_platforms,
            validator=args.validator,
            update_manifest=args.update_manifest,
        )
    except (BuildError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m blender_addon.build",
        description="Build the ShapeBridge Blender extension zip with bundled wheels.",
    )
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
