"""Deprecated: the per-patient comparison moved to `immunoprofile.comparison`.

``immunoprofile.compare`` is the public function (``ip.compare(table)``); this old module
path still gives every name of `immunoprofile.comparison`, with a DeprecationWarning.
Importing it binds the package attribute ``compare`` to this module, so the module stays
callable (as the function) until it goes away.
"""

import sys
import types
from typing import Any

from immunoprofile._deprecate import moved_module

__getattr__ = moved_module(__name__, "immunoprofile.comparison")


class _CallableStub(types.ModuleType):
    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        from immunoprofile.comparison import compare

        return compare(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableStub
