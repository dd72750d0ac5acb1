"""Strip outputs and execution counts from the example notebooks: ``python -m examples.strip``."""

from __future__ import annotations

from pathlib import Path

import nbformat


def main() -> None:
    for path in sorted(Path(__file__).parent.glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        for cell in nb.cells:
            if cell.cell_type == "code":
                cell.outputs, cell.execution_count = [], None
        nbformat.write(nb, path)
        print(f"stripped {path}")


if __name__ == "__main__":
    main()
