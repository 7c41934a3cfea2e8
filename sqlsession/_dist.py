"""The distribution's name on PyPI, for messages that tell users what to install.

``sqlsession`` was taken on PyPI, so the distribution is ``sqlsession-store``; the
import package (and the command) stay ``sqlsession``. ``pyproject.toml`` names it too;
a test keeps the two equal.
"""

DISTRIBUTION = "sqlsession-store"
