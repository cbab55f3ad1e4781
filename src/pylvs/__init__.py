"""pylvs: a Linux Virtual Server (LVS-NAT) director in user space.

The supported public names are listed in ``__all__``; everything else is internal.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
