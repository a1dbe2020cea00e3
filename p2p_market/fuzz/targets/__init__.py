"""One module per fuzz target, each exposing `TARGET` (see ../target.py). They are
imported only through `fuzz.registry`, inside atheris's import hook, so that the
parsers they load are instrumented for coverage."""
