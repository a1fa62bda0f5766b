"""Build what an Amazon MWAA environment takes from its S3 bucket (docs/mwaa.md).

``scripts/build-mwaa-plugins [--out build/mwaa]`` writes the bucket's layout::

    plugins.zip        .airflowignore, emm_plugin.py, emm_sdc/  (MWAA unpacks it into /usr/local/airflow/plugins,
                       which Airflow puts on sys.path: ``import emm_sdc`` works as in the image)
    requirements.txt   --constraint /usr/local/airflow/dags/constraints.txt + requirements.txt without apache-airflow
    startup.sh         the EMM_* settings (deploy/mwaa/startup.sh)
    pools.json         the lane pools, to set once through the MWAA CLI (``airflow pools set``)
    dags/              dags/*.py, constraints.txt, include/ (ITF YAMLs, sdc.yaml, SQL), processors/ (local runner),
                       .airflowignore (include/, processors/)

Nothing is built when an ITF YAML or the site config is invalid, or when an ITF YAML asks for the ``docker``
runner (MWAA has no container engine): every problem is printed as ``file: field: rule``.
The zip is reproducible (sorted entries, fixed timestamps): the same sources give the same bytes, so uploading
it again does not make a new S3 object version and restart the environment for nothing.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
#: Where MWAA syncs the bucket's dags/ folder; the SDC's project root there (EMM_PROJECT_ROOT in startup.sh).
MWAA_DAGS = "/usr/local/airflow/dags"
CONSTRAINT_LINE = f'--constraint "{MWAA_DAGS}/constraints.txt"'
#: The Airflow distributions MWAA installs itself; requirements.txt must not ask for another version of them.
MWAA_OWNED = ("apache-airflow",)
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)
_SKIP_DIRS = {"__pycache__", "tests", "wheels"}
_SKIP_FILES = {"conftest.py", "Containerfile", "install_deps.sh"}


class BuildError(RuntimeError):
    """The sources cannot make a working MWAA bundle; ``problems`` are ``file: field: rule`` lines."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class Bundle:
    """What :func:`build` wrote."""

    out: Path
    plugins_zip: Path
    requirements: Path
    startup: Path
    pools: Path
    dags: Path


def check_sources(root: Path = ROOT) -> list[str]:
    """Problems that would break the bundle on MWAA: invalid YAMLs, ``docker`` runners (``file: field: rule``)."""
    from emm_sdc.core import config_store
    from emm_sdc.core.config import CONFIG_FILES, ConfigError, load_config

    problems: list[str] = []
    itf_dir = root / "include" / "itf_configs"
    files = [config_store.ConfigFile(inst, itf_dir / name) for inst, name in CONFIG_FILES.items()]
    files.append(config_store.ConfigFile(config_store.SITE, root / "include" / "sdc.yaml"))
    for cf in files:
        result = config_store.check(cf, keep=False)
        if not result.ok:
            problems.extend(result.lines())
        elif cf.name in CONFIG_FILES:
            try:
                kind = load_config(cf.path).processing.runner.kind
            except ConfigError as err:  # pragma: no cover - check() passed, so the file loads
                problems.append(f"{cf.path}: {err}")
                continue
            if kind == "docker":
                problems.append(f"{cf.path}: processing.runner.kind: 'docker' needs a container engine, which MWAA "
                                "does not have; use 'batch' (or 'local') there")
    return problems


def mwaa_requirements(requirements: Path) -> str:
    """requirements.txt for MWAA: the constraint line first, then ours without the Airflow MWAA installs."""
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    lines = [CONSTRAINT_LINE]
    for raw in requirements.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if canonicalize_name(Requirement(line).name) in MWAA_OWNED:
            continue
        lines.append(line)
    return "\n".join(lines) + "\n"


def _files(base: Path, sub: str) -> list[Path]:
    """Files under ``base/sub`` worth shipping (no caches, tests or build leftovers), sorted."""
    top = base / sub
    found = [top] if top.is_file() else []
    if top.is_dir():
        for p in top.rglob("*"):
            rel = p.relative_to(base)
            if p.is_file() and not _SKIP_DIRS.intersection(rel.parts[:-1]) and p.name not in _SKIP_FILES \
                    and p.suffix != ".pyc":
                found.append(p)
    return sorted(found)


def write_plugins_zip(root: Path, target: Path) -> list[str]:
    """plugins.zip with the plugin module and the emm_sdc package at its top level; returns the entry names."""
    plugins = root / "plugins"
    entries = [p for part in (".airflowignore", "emm_plugin.py", "emm_sdc") for p in _files(plugins, part)]
    names = []
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in entries:
            name = path.relative_to(plugins).as_posix()
            info = zipfile.ZipInfo(name, date_time=_ZIP_TIME)
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, path.read_bytes())
            names.append(name)
    return names


def _copy(files: list[Path], base: Path, dest: Path) -> None:
    for path in files:
        target = dest / path.relative_to(base)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)


def pool_file(root: Path = ROOT) -> dict[str, dict[str, object]]:
    """The lane pools of the ITF YAMLs in ``root`` in ``airflow pools import`` form."""
    from emm_sdc.core.config import CONFIG_FILES, load_config
    from emm_sdc.lanes import pool_specs

    configs = [load_config(root / "include" / "itf_configs" / name) for name in CONFIG_FILES.values()]
    return {s["name"]: {"slots": s["slots"], "description": s["description"], "include_deferred": False}
            for s in pool_specs(configs)}


def build(out: Path, root: Path = ROOT) -> Bundle:
    """Write the MWAA bucket layout into ``out`` (emptied first); :class:`BuildError` if the sources are unfit."""
    problems = check_sources(root)
    if problems:
        raise BuildError(problems)
    if out.exists():
        shutil.rmtree(out)
    dags = out / "dags"
    dags.mkdir(parents=True)
    plugins_zip = out / "plugins.zip"
    write_plugins_zip(root, plugins_zip)
    _copy(sorted((root / "dags").glob("*.py")), root / "dags", dags)
    _copy(_files(root, "include") + _files(root, "processors"), root, dags)
    shutil.copyfile(root / "constraints.txt", dags / "constraints.txt")
    (dags / ".airflowignore").write_text(
        "# not DAG files: the SDC's configs and SQL, and the reference processors the local runner starts\n"
        "include/\nprocessors/\n")
    requirements = out / "requirements.txt"
    requirements.write_text(mwaa_requirements(root / "requirements.txt"))
    startup = out / "startup.sh"
    shutil.copyfile(root / "deploy" / "mwaa" / "startup.sh", startup)
    pools = out / "pools.json"
    pools.write_text(json.dumps(pool_file(root), indent=2) + "\n")
    return Bundle(out, plugins_zip, requirements, startup, pools, dags)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="build-mwaa-plugins", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "mwaa", help="output folder (default build/mwaa)")
    args = parser.parse_args(argv)
    try:
        bundle = build(args.out.resolve())
    except BuildError as err:
        print("\n".join(err.problems), file=sys.stderr)
        print(f"FAILED: nothing built ({len(err.problems)} problem(s))", file=sys.stderr)
        return 1
    with zipfile.ZipFile(bundle.plugins_zip) as zf:
        entries = len(zf.namelist())
    print(f"built {bundle.out}: plugins.zip ({entries} files), requirements.txt, startup.sh, pools.json, dags/")
    print("upload:  aws s3 sync", bundle.out, "s3://<MWAA bucket>/   (then point the environment at the new "
          "plugins.zip, requirements.txt and startup.sh object versions)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
