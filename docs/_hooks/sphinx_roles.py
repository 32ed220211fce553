"""mkdocs hook: show Sphinx cross-reference roles of the docstrings as plain code.

The docstrings are numpydoc and name other objects with Sphinx roles
(``:func:`read_table```), which mkdocstrings prints as they are. This keeps the
name in code style and drops the role, in the rendered HTML only.
"""

from __future__ import annotations

import re
from typing import Any

_ROLE = r":(?:py:)?(?:func|data|class|meth|attr|mod|obj|exc|const):"
#: a role before a code span that Markdown already made: :func:<code>x</code>
_BEFORE_CODE = re.compile(_ROLE + r"(?=<code>)")
#: a role left as text inside a code span (type lines): :data:`X`
_IN_TEXT = re.compile(_ROLE + r"`([^`<]+)`")


def on_page_content(html: str, **kwargs: Any) -> str:
    return _IN_TEXT.sub(r"\1", _BEFORE_CODE.sub("", html))
