"""`ferry docs [--out DIR] [--serve [--port 8000]]`: the AsyncAPI document of every service.

Convention: a service package exposes `services.<name>.app:build`, a function taking no
argument (settings come from the environment) that returns an object whose `.service.app`
is its FastStream app. Building must not connect to anything: the documents are made from
the declarations alone, so `ferry docs` works with no broker and no database.

FastStream's document is completed here: request/reply queues get their reply schema
(`x-ferry-reply`), added under `components/schemas` with the structs it nests.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import inspect
import sys
from http import HTTPStatus, server
from pathlib import Path
from typing import Any

import msgspec
from faststream import FastStream
from faststream.specification.asyncapi.site import get_asyncapi_html

import shared.contracts
from services.cli.errors import CliError
from services.cli.up import discover
from shared.contracts import REPLIES
from shared.settings import BaseSettings

COMPONENTS = "#/components/schemas/"
REPLY_KEY = "x-ferry-reply"


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "docs",
        help="write (and serve) the AsyncAPI documents of the services",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--out", type=Path, default=Path("docs/asyncapi"), metavar="DIR")
    parser.add_argument("--serve", action="store_true", help="serve them as HTML on 127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.set_defaults(run=run)


def run(settings: BaseSettings, args: argparse.Namespace) -> int:
    del settings  # each service's build() reads its own settings from the environment
    documents = {name: document_of(name) for name in discover()}
    write(documents, args.out)
    for name in documents:
        print(args.out / f"{name}.json")
    print(args.out / "index.json")
    if args.serve:
        serve(documents, args.port)
    return 0


# -- building the documents ------------------------------------------------------------


def app_of(service: str) -> FastStream:
    try:
        module = importlib.import_module(f"services.{service}.app")
    except ImportError as exc:
        raise CliError(f"{service}: cannot import services.{service}.app: {exc}") from None
    build = getattr(module, "build", None)
    if not callable(build):
        raise CliError(f"{service}: services.{service}.app has no build() (see `ferry docs -h`)")
    app = getattr(getattr(build(), "service", None), "app", None)
    if not isinstance(app, FastStream):
        raise CliError(f"{service}: build() returned no .service.app FastStream app")
    return app


def document_of(service: str) -> dict[str, Any]:
    app = app_of(service)
    document: dict[str, Any] = app.schema.to_specification().to_jsonable()
    _add_replies(document)
    _add_components(document)
    return document


def _add_replies(document: dict[str, Any]) -> None:
    replies = REPLIES
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    for name, channel in document.get("channels", {}).items():
        reply = replies.get(channel.get("address", ""))
        if reply is None:
            continue
        schemas.setdefault(reply.__name__, {})  # filled in by _add_components
        pointer = {"$ref": COMPONENTS + reply.__name__}
        note = f"Request/reply: the answer (to `reply_to`) is a {reply.__name__}."
        channel["description"] = " ".join(filter(None, [channel.get("description"), note]))
        channel[REPLY_KEY] = pointer
        operation = document.get("operations", {}).get(name)
        if operation is not None:
            operation[REPLY_KEY] = pointer


def _add_components(document: dict[str, Any]) -> None:
    """Add every struct a `#/components/schemas/<Name>` points at and the document lacks."""
    structs = [
        value
        for value in vars(shared.contracts).values()
        if inspect.isclass(value) and issubclass(value, msgspec.Struct)
    ]
    _, known = msgspec.json.schema_components(structs, ref_template=COMPONENTS + "{name}")
    schemas: dict[str, Any] = document["components"]["schemas"]
    while missing := {
        name for name in _refs(document, COMPONENTS) if not schemas.get(name) and name in known
    }:
        for name in missing:
            schemas[name] = known[name]


def _refs(node: Any, prefix: str) -> set[str]:
    """The names of every `$ref` under `node` that starts with `prefix`."""
    found: set[str] = set()
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith(prefix):
            found.add(ref.removeprefix(prefix))
        node = list(node.values())
    if isinstance(node, list):
        for value in node:
            found |= _refs(value, prefix)
    return found


def write(documents: dict[str, dict[str, Any]], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for name, document in documents.items():
        (out / f"{name}.json").write_bytes(msgspec.json.format(msgspec.json.encode(document)))
    index = {
        name: {
            "file": f"{name}.json",
            "title": document["info"]["title"],
            "channels": sorted(document.get("channels", {})),
        }
        for name, document in documents.items()
    }
    (out / "index.json").write_bytes(msgspec.json.format(msgspec.json.encode(index)))


# -- serving ---------------------------------------------------------------------------


class _Document:
    """What `get_asyncapi_html` needs of a specification, over our completed JSON."""

    def __init__(self, document: dict[str, Any]) -> None:
        self.document = document
        self.title = str(document["info"]["title"])

    def to_jsonable(self) -> Any:
        return self.document

    def to_json(self) -> str:
        return msgspec.json.encode(self.document).decode()

    def to_yaml(self) -> str:
        return self.to_json()  # JSON is YAML


def pages(documents: dict[str, dict[str, Any]]) -> dict[str, bytes]:
    """URL path -> HTML: one viewer page per service and an index linking them."""
    result = {
        f"/{name}": get_asyncapi_html(_Document(doc), try_it_out_path=None).encode()
        for name, doc in documents.items()
    }
    links = "".join(f'<li><a href="/{name}">{name}</a></li>' for name in documents)
    result["/"] = f"<!DOCTYPE html><title>Ferry AsyncAPI</title><ul>{links}</ul>".encode()
    return result


class _Handler(server.BaseHTTPRequestHandler):
    def __init__(self, *args: Any, pages: dict[str, bytes], **kwargs: Any) -> None:
        self.pages = pages
        super().__init__(*args, **kwargs)

    def do_GET(self) -> None:
        body = self.pages.get(self.path.split("?", 1)[0].rstrip("/") or "/")
        status = HTTPStatus.OK if body is not None else HTTPStatus.NOT_FOUND
        body = body if body is not None else b"not found\n"
        self.send_response(status)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def serve(documents: dict[str, dict[str, Any]], port: int) -> None:
    httpd = server.ThreadingHTTPServer(
        ("127.0.0.1", port), functools.partial(_Handler, pages=pages(documents))
    )
    print(f"serving on http://127.0.0.1:{httpd.server_port}/ (Ctrl-C stops)", flush=True)
    try:
        httpd.serve_forever()
    except KeyboardInterrupt:
        print("stopped", file=sys.stderr)
    finally:
        httpd.server_close()
