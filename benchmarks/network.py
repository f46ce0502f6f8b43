"""Headless Chromium over an emulated real network: how to launch Debian's Chromium here, the
network a visitor of a Space might have, and counting what a page sends and receives. Shared
by benchmarks/browser.py (figures) and tests/test_browser.py (assertions)."""

from __future__ import annotations

CHROMIUM = "/usr/bin/chromium"
# without the background-networking flags Chromium keeps calling out to a closed network
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run",
                 "--disable-quic"]
LATENCY_MS = 150
NETWORK = {"offline": False, "latency": LATENCY_MS, "downloadThroughput": 10e6 / 8,
           "uploadThroughput": 5e6 / 8}  # 10 Mbit/s down, 5 Mbit/s up


class Traffic:
    """Requests sent and bytes received by one page, from Chrome DevTools' network events,
    on the emulated NETWORK: bytes on the wire (compressed, headers included) of every finished
    reply; a reply still streaming (gradio's server-sent events) counts by its chunks so far."""

    def __init__(self, page):
        self.requests: list[str] = []
        self.streamed: dict[str, int] = {}
        self.finished: dict[str, int] = {}
        self.urls: dict[str, str] = {}
        page.on("request", lambda request: self.requests.append(request.url))
        cdp = page.context.new_cdp_session(page)
        cdp.send("Network.enable")
        cdp.send("Network.emulateNetworkConditions", NETWORK)
        cdp.on("Network.requestWillBeSent",
               lambda e: self.urls.__setitem__(e["requestId"], e["request"]["url"]))
        cdp.on("Network.dataReceived", self.data_received)
        cdp.on("Network.loadingFinished",
               lambda e: self.finished.__setitem__(e["requestId"], e["encodedDataLength"]))

    def data_received(self, event) -> None:
        # chunks of a stream often report no encoded length until it finishes: then the data's
        size = event["encodedDataLength"] or event["dataLength"]
        self.streamed[event["requestId"]] = self.streamed.get(event["requestId"], 0) + size

    @property
    def sent(self) -> int:
        """Requests over the network (data: URLs are not traffic)."""
        return sum(not url.startswith("data:") for url in self.requests)

    @property
    def received(self) -> int:
        ids = {i for i in set(self.streamed) | set(self.finished)
               if not self.urls.get(i, "").startswith("data:")}
        # a finished reply's encoded length is what crossed the network (a compressed script
        # decodes to several times more)
        return sum(self.finished[i] if i in self.finished else self.streamed.get(i, 0)
                   for i in ids)
