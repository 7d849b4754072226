"""Tests of the MiniMax provider plugin (a package, so module names stay unique)."""
