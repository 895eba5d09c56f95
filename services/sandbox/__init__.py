"""Local stand-ins for the external systems Ferry talks to (HF Hub, AIoD + Keycloak,
OpenHexa): real HTTP servers on 127.0.0.1 for tests, benchmarks and `ferry up --sandbox`.

`server` runs them, `faults` injects failures into them; each stand-in is a module exposing
`STAND_IN` (see `server`). `ferry sandbox` (`cli`) and `python -m services.sandbox` start them.
"""
