"""uvicorn's httptools protocol (the C HTTP parser), refusing what its h11 protocol refused.

httptools reads a request line without an HTTP version ("GET /healthz") as HTTP/0.9 and the app
would answer it; h11 answered 400. No client or proxy of this service speaks HTTP/0.9, so such a
request gets uvicorn's own 400 "Invalid HTTP request received." and the connection is closed, as
with any line the parser cannot read.
"""

from __future__ import annotations

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class StrictHttpToolsProtocol(HttpToolsProtocol):
    def on_headers_complete(self) -> None:
        if self.parser.get_http_version() == "0.9":
            # Raised inside a parser callback, it leaves feed_data as HttpParserCallbackError, an
            # HttpParserError: data_received answers 400 and closes.
            raise ValueError("HTTP/0.9 request line (no HTTP version)")
        super().on_headers_complete()
