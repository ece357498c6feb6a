"""Where emo's own files live: the Hydra configs and the bundled weights."""

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
# A source checkout or editable install keeps the configs at the repository root (conf/);
# a built wheel carries a copy inside the package (emo/conf, see pyproject.toml).
CONF_DIR = next(
    (p for p in (PACKAGE_DIR.parent / "conf", PACKAGE_DIR / "conf") if p.is_dir()),
    PACKAGE_DIR.parent / "conf",
)
WEIGHTS_DIR = PACKAGE_DIR / "weights"
