"""`ferry docs [--out DIR] [--serve [--port 8000]]`: the AsyncAPI document of every service.

One AsyncAPI 3.0 document per service, for whoever publishes to its queues: the exchanges,
its work queues (routing key, queue type and arguments, message and reply schemas), the
events it publishes, its dead-letter queue and the headers a dead letter carries, and the
parking and delay queues. Names are shown without the FERRY_NAMESPACE prefix.

Convention: a service package exposes `services.<name>.app:build`, a function taking no
argument (settings come from the environment) that returns an object whose `.service` is
its `shared.service.Service`; the app module's docstring describes the service. Building
must not connect to anything: the documents are made from the declarations alone, so
`ferry docs` works with no broker and no database.
"""

from __future__ import annotations

import argparse
import functools
import inspect
import sys
from http import HTTPStatus, server
from pathlib import Path
from typing import Any

import msgspec
from faststream.specification.asyncapi.site import get_asyncapi_html

from services.cli import asyncapi
from services.cli.errors import CliError
from services.cli.up import discover
from shared.service import Service
from shared.settings import BaseSettings, SettingsError


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "docs",
        help="write (and serve) the AsyncAPI documents of the services",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--out", type=Path, default=Path("docs/asyncapi"), metavar="DIR", help="(docs/asyncapi)"
    )
    parser.add_argument("--serve", action="store_true", help="serve them as HTML on 127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.set_defaults(run=run)


def run(settings: BaseSettings, args: argparse.Namespace) -> int:
    del settings  # each service's build() reads its own settings from the environment
    documents = documents_of(discover())
    write(documents, args.out)
    for name in documents:
        print(args.out / f"{name}.json")
    print(args.out / "index.json")
    if args.serve:
        serve(documents, args.port)
    return 0


# -- building the documents ------------------------------------------------------------


def documents_of(names: list[str]) -> dict[str, dict[str, Any]]:
    services = {name: service_of(name) for name in names}
    # Every key some service takes as a command or request: what is left is an event.
    consumed = {
        item.spec.routing_key
        for service in services.values()
        for item in asyncapi.consumed_by(service)
        if item.kind != "broadcast"
    }
    return {
        name: asyncapi.document(service, description_of(name, service), consumed)
        for name, service in services.items()
    }


def service_of(name: str) -> Service:
    try:
        module = asyncapi.app_module(name)
    except ImportError as exc:
        raise CliError(f"{name}: cannot import services.{name}.app: {exc}") from None
    build = getattr(module, "build", None)
    if not callable(build):
        raise CliError(f"{name}: services.{name}.app has no build() (see `ferry docs -h`)")
    try:
        service = getattr(build(), "service", None)
    except SettingsError as exc:
        raise CliError(f"{name}: {exc}") from None
    if not isinstance(service, Service):
        raise CliError(f"{name}: build() returned nothing with a .service (a Service)")
    return service


def description_of(name: str, service: Service) -> str:
    """The service's own description: the one it gave the runtime, else its app module's
    docstring (never the runtime's own)."""
    return (
        service.description or inspect.getdoc(asyncapi.app_module(name)) or f"The {name} service."
    )


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
