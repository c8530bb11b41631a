"""The runtime type checker the test suite applies to the package (via jaxtyping's import hook).

beartype with PEP 484's numeric tower, so an ``int`` passes where ``float`` is annotated.
"""

from beartype import BeartypeConf, beartype

typechecker = beartype(conf=BeartypeConf(is_pep484_tower=True))
