"""The workshop edition of the numbered notebooks: the same sources with each solution replaced by a stub to fill in.

In a notebook, a code cell tagged ``solution`` defines one or more functions; the cell after it, tagged ``check``,
calls a check from ``workbench.exercises`` on the function. The exercises edition keeps every cell but turns each
solution into its ``def`` line(s) and docstring followed by ``raise NotImplementedError("Your code here")`` (code
after the function in that cell, such as a usage line, stays), clears outputs, and inserts after the title a cell
with the learning objectives, the rough time and "predict before you run" prompts from the notebook's ``workshop``
metadata (``set_workshop_metadata`` writes it). One mechanism for every notebook: a later notebook only tags cells.

Why ``ast`` and not text patterns: a solution may have decorators, a signature over several lines, several
functions, or a docstring with quotes inside; the parser knows where each function and its docstring end.
"""

from __future__ import annotations

import ast
import io
import json
import tokenize
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import nbformat
from nbformat.corpus.words import generate_corpus_id

from workbench.paths import project_root
from workbench.reproduce import notebook_paths

SOLUTION_TAG = "solution"
"""Tag of a code cell whose functions the learner writes; the exercises edition stubs them."""
CHECK_TAG = "check"
"""Tag of the cell after a solution that checks the learner's function (kept as is)."""
EXERCISE_TAG = "exercise"
"""Tag a stubbed cell carries in the exercises edition, in place of ``solution``."""
STUB = 'raise NotImplementedError("Your code here")'


def default_out_dir() -> Path:
    """``workshop/`` at the project root (git-ignored: the edition is built, never committed)."""
    return project_root() / "workshop"


@dataclass
class WorkshopInfo:
    """What the inserted cell tells a workshop participant, stored in a notebook's ``metadata["workshop"]``."""

    objectives: list[str]
    """What the participant can do after the notebook, one short sentence each."""
    minutes: int
    """Rough time to work through the notebook, in minutes."""
    predict: list[str]
    """Questions to answer before running the cell they are about."""

    def __post_init__(self) -> None:
        for field_name in ("objectives", "predict"):
            value = getattr(self, field_name)
            if isinstance(value, str) or not value or not all(isinstance(s, str) and s.strip() for s in value):
                raise ValueError(f"workshop {field_name} must be a non-empty list of non-empty strings, got {value!r}")
        if isinstance(self.minutes, bool) or not isinstance(self.minutes, int) or self.minutes <= 0:
            raise ValueError(f"workshop minutes must be a positive int, got {self.minutes!r}")

    def to_dict(self) -> dict:
        return {"objectives": list(self.objectives), "minutes": self.minutes, "predict": list(self.predict)}


# ---------------------------------------------------------------------------------------------- stubs


def _colon_line(lines: list[str], node: ast.FunctionDef | ast.AsyncFunctionDef) -> tuple[int, int]:
    """(1-based line, column) of the ``:`` that ends the signature of ``node``: the first colon outside brackets
    after ``def`` (annotations and defaults sit inside the brackets)."""
    text = "\n".join(lines[node.lineno - 1:]) + "\n"
    depth, seen_def = 0, False
    for tok in tokenize.generate_tokens(io.StringIO(text).readline):
        if tok.type == tokenize.NAME and tok.string == "def":
            seen_def = True
        elif tok.type == tokenize.OP and seen_def:
            if tok.string in "([{":
                depth += 1
            elif tok.string in ")]}":
                depth -= 1
            elif tok.string == ":" and depth == 0:
                return node.lineno + tok.start[0] - 1, tok.start[1]
    raise ValueError(f"no ':' ends the signature of {node.name} (line {node.lineno})")


def _docstring_node(node: ast.FunctionDef | ast.AsyncFunctionDef) -> ast.Expr | None:
    first = node.body[0]
    if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
        return first
    return None


def _stub_lines(lines: list[str], node: ast.FunctionDef | ast.AsyncFunctionDef) -> list[str]:
    """The decorators, signature and docstring of ``node`` followed by the stub, as lines."""
    first = min([node.lineno] + [d.lineno for d in node.decorator_list])
    colon_line, colon_col = _colon_line(lines, node)
    body_on_colon_line = node.body[0].lineno == colon_line
    header = lines[first - 1:colon_line]
    if body_on_colon_line:  # `def f(x): return x`
        header[-1] = header[-1][:colon_col + 1]
        indent = " " * (node.col_offset + 4)
    else:
        indent = " " * node.body[0].col_offset
    doc = _docstring_node(node)
    if doc is None:
        docstring = []
    elif doc.lineno > colon_line:
        docstring = lines[doc.lineno - 1:doc.end_lineno]
    else:
        docstring = [indent + ast.get_source_segment("\n".join(lines), doc)]
    return header + docstring + [indent + STUB]


def _body_end(lines: list[str], node: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    """The last line (1-based) of ``node``'s body, including comments indented into it after its last statement."""
    def inside(line: str) -> bool:  # blank, or a comment indented deeper than the def
        stripped = line.lstrip()
        return not stripped or (stripped.startswith("#") and len(line) - len(stripped) > node.col_offset)

    end = node.end_lineno
    while end < len(lines) and inside(lines[end]):
        end += 1
    while end > node.end_lineno and not lines[end - 1].strip():
        end -= 1
    return end


def stub_source(source: str, where: str = "solution cell") -> str:
    """``source`` with the body of every top-level function replaced by ``raise NotImplementedError(...)``:
    decorators, the ``def`` line(s) and the docstring kept, and every line outside the functions kept.

    Raises ``ValueError`` when the source does not parse (e.g. an IPython magic) or defines no function, since a
    solution cell with nothing to stub would hand the answer to the participant.
    """
    try:
        tree = ast.parse(source)
    except SyntaxError as err:
        raise ValueError(f"{where} does not parse as Python ({err.msg}, line {err.lineno}); a solution cell must "
                         "be plain Python (no IPython magics)") from err
    functions = [n for n in tree.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)]
    if not functions:
        raise ValueError(f"{where} defines no top-level function, so there is nothing to stub; tag only cells "
                         f"that define the function(s) the participant writes with {SOLUTION_TAG!r}")
    lines = source.splitlines()
    for node in reversed(functions):
        first = min([node.lineno] + [d.lineno for d in node.decorator_list])
        lines[first - 1:_body_end(lines, node)] = _stub_lines(lines, node)
    return "\n".join(lines) + ("\n" if source.endswith("\n") else "")


# ---------------------------------------------------------------------------------------------- notebooks


def _read(path: Path) -> nbformat.NotebookNode:
    """The notebook at ``path`` as nbformat 4, every cell with an id (cells committed without one get a new id)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", nbformat.validator.MissingIDFieldWarning)
        nb = nbformat.read(path, as_version=4)
    nb.nbformat_minor = max(nb.nbformat_minor, 5)
    for cell in nb.cells:
        cell.setdefault("id", generate_corpus_id())
    return nb


def _tags(cell: nbformat.NotebookNode) -> list[str]:
    return list(cell.get("metadata", {}).get("tags", []))


def has_solutions(path: str | Path) -> bool:
    """True when the notebook has at least one code cell tagged ``solution``."""
    return any(c["cell_type"] == "code" and SOLUTION_TAG in c.get("metadata", {}).get("tags", [])
               for c in json.loads(Path(path).read_text())["cells"])


def workshop_markdown(info: dict | None) -> str:
    """The cell inserted after the title: how the exercises work, then (when the notebook has ``workshop``
    metadata) the learning objectives, the rough time and the "predict before you run" prompts."""
    parts = ["## Workshop edition\n"
             f"Each function whose body is `{STUB}` is yours to write: its docstring says what it returns. The cell "
             "after it checks your function on small cases and, when it fails, names the likely mistake. Run the "
             "cells in order; later cells use your functions."]
    if info:
        info = WorkshopInfo(**info)
        parts.append("### Learning objectives\n" + "\n".join(f"- {o}" for o in info.objectives))
        parts.append(f"### Rough time\nAbout {info.minutes} minutes.")
        parts.append("### Predict before you run\nWrite your answer down before you run the cell it is about, then "
                     "compare.\n" + "\n".join(f"{i}. {p}" for i, p in enumerate(info.predict, 1)))
    return "\n\n".join(parts)


def exercises_notebook(nb: nbformat.NotebookNode, name: str = "notebook") -> nbformat.NotebookNode:
    """The exercises edition of ``nb`` (a copy): solutions stubbed and retagged ``exercise``, outputs cleared, the
    workshop cell inserted after the title cell (or first, when the notebook has no ``# `` title)."""
    nb = nbformat.from_dict(json.loads(json.dumps(nb)))
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        cell.outputs, cell.execution_count = [], None
        tags = _tags(cell)
        if SOLUTION_TAG in tags:
            cell.source = stub_source(cell.source, where=f"{name} cell {i} (tagged {SOLUTION_TAG!r})")
            cell.metadata["tags"] = [EXERCISE_TAG if t == SOLUTION_TAG else t for t in tags]
    has_title = bool(nb.cells) and nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# ")
    if has_title:
        title, _, rest = nb.cells[0].source.partition("\n")
        nb.cells[0].source = f"{title} (exercises)" + (f"\n{rest}" if rest else "")
    intro = nbformat.v4.new_markdown_cell(workshop_markdown(nb.metadata.get("workshop")))
    nb.cells.insert(1 if has_title else 0, intro)
    nbformat.validate(nb)
    return nb


def build_exercises(path: str | Path, out_dir: str | Path | None = None) -> Path:
    """Write the exercises edition of the notebook at ``path`` to ``out_dir/<name>_exercises.ipynb`` (default
    ``workshop/``) and return its path."""
    path = Path(path)
    out = Path(out_dir) if out_dir is not None else default_out_dir()
    out.mkdir(parents=True, exist_ok=True)
    target = out / f"{path.stem}_exercises.ipynb"
    nbformat.write(exercises_notebook(_read(path), name=path.name), target)
    return target


def build_workshop(out_dir: str | Path | None = None, only: Sequence[str] | None = None) -> list[Path]:
    """Build the exercises edition of every numbered notebook (or those numbered in ``only``, e.g. ["00", "03"])
    that has ``solution`` cells; return the paths written (empty when none has any)."""
    return [build_exercises(p, out_dir) for p in notebook_paths(list(only) if only else None) if has_solutions(p)]


def set_workshop_metadata(path: str | Path, objectives: Sequence[str], minutes: int, predict: Sequence[str]) -> None:
    """Set the notebook's ``metadata["workshop"]`` (what ``workshop_markdown`` shows), leaving every cell as it is.

    Reads and writes the JSON directly, in nbformat's own layout (indent 1, sorted keys): ``nbformat.write`` would
    also give ids to cells committed without one, and this must change the metadata only (someone may be editing
    the cells).
    """
    path = Path(path)
    info = WorkshopInfo(objectives=list(objectives), minutes=minutes, predict=list(predict))
    raw = json.loads(path.read_text())
    raw.setdefault("metadata", {})["workshop"] = info.to_dict()
    path.write_text(json.dumps(raw, indent=1, sort_keys=True, ensure_ascii=False) + "\n")


def solution_functions(path: str | Path) -> dict[str, Callable]:
    """The functions defined in the notebook's ``solution`` cells, by name, defined after the notebook's top-level
    imports (from every code cell) so that they run as in the notebook; the rest of each cell is not run.

    For tests: the checks in ``workbench.exercises`` run on these, so the notebook's own solutions must pass.
    A function that reads a notebook global other than an import fails when called.
    """
    cells = [c for c in _read(Path(path)).cells if c.cell_type == "code"]
    namespace: dict = {}
    for cell in cells:
        try:
            tree = ast.parse(cell.source)
        except SyntaxError:
            continue
        imports = [n for n in tree.body if isinstance(n, ast.Import | ast.ImportFrom)]
        exec(compile(ast.Module(body=imports, type_ignores=[]), str(path), "exec"), namespace)
    names: list[str] = []
    for cell in cells:
        if SOLUTION_TAG in _tags(cell):
            tree = ast.parse(cell.source)
            functions = [n for n in tree.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)]
            exec(compile(ast.Module(body=functions, type_ignores=[]), str(path), "exec"), namespace)
            names += [n.name for n in functions]
    return {name: namespace[name] for name in names}
