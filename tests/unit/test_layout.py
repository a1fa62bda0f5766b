"""The production package holds only what runs in production (issue 15): dev tooling lives in devtools/emm_dev."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_nothing_in_the_production_package_imports_the_dev_tooling() -> None:
    offenders = {str(p.relative_to(ROOT)): sorted(n for n in _imports(p) if n.split(".")[0] == "emm_dev")
                 for p in [*(ROOT / "plugins").rglob("*.py"), *(ROOT / "dags").rglob("*.py")]}
    assert {k: v for k, v in offenders.items() if v} == {}


def test_the_dev_tooling_is_not_in_the_production_package_or_image() -> None:
    package = {p.stem for p in (ROOT / "plugins" / "emm_sdc").glob("*.py")}
    assert not package & {"cli", "embedded", "moc", "synthetic", "synthetic_spice", "airflow_local"}
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "devtools" not in dockerfile and "COPY --chown=airflow:root plugins/ /opt/airflow/plugins/" in dockerfile
