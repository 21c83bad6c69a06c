"""Built-in process definitions, shipped as YAML beside this file."""

from pathlib import Path

BUILTIN_DIR = Path(__file__).parent
