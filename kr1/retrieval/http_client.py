"""A retriever behind HTTP: any server of Search-R1's protocol serves the rollout, through the pool's interface.

    retriever = HttpRetriever("http://127.0.0.1:8000/retrieve", top_k=3)   # asks the server once, now
    hits = retriever.search(["who directed the amber lantern", ...])      # list (per query) of Hit

The protocol (Search-R1's search_r1/search/retrieval_server.py; verl's SearchTool speaks it too):

    POST /retrieve  {"queries": [...], "topk": k, "return_scores": true}
    ->              {"result": [[{"document": {"id", "contents"}, "score"}, ...], ...]}

where `contents` is a wiki-18 row's: the quoted title on the first line, then the passage.

It stands where `actors.retriever.RetrieverPool` stands: the engines' `QueryBatcher` calls `search(queries)` from
its threads, each batch goes as one request, and a query repeated within a batch is sent once (`BatchHits.unique`
counts those sent), so the `search/*` metrics mean what they mean with the pool. At most `max_concurrency` requests
of one process are in flight; each may take `timeout_s`; one that fails (no connection, timeout, HTTP 429 or 5xx)
is tried again up to `retries` times after doubling pauses. What still fails, or is refused (401, a malformed
answer), is a one-line `RetrieverHTTPError` naming the URL. The client pickles as its settings, so engine actors
hold it as a constructor argument, each with its own connections.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Sequence

import requests

from kr1.data import DataError, passage_from_row
from kr1.errors import UserError, first_line
from kr1.retrieval.hits import BatchHits, Hit

RETRY_STATUS = frozenset({429, 500, 502, 503, 504})


class RetrieverHTTPError(UserError):
    """The retrieval server cannot be reached, refuses, or answers outside the protocol (names the URL)."""


class HttpRetriever:
    """A client of one `POST /retrieve` server, searched like the pool: `search(queries, k=None)`."""

    def __init__(self, url: str, top_k: int = 3, max_query_chars: int = 1000, max_concurrency: int = 8,
                 timeout_s: float = 30.0, retries: int = 3, backoff_s: float = 0.5, token: str | None = None,
                 probe: bool = True) -> None:
        self.url, self.top_k, self.max_query_chars, self.token = url, top_k, max_query_chars, token
        self.max_concurrency, self.timeout_s = max_concurrency, timeout_s
        self.retries, self.backoff_s = retries, backoff_s
        self._connect()
        if probe:  # an unreachable server stops the caller now, not the first rollout
            self._post(["kr1 probe"], 1, retries=0)

    def _connect(self) -> None:
        self.slots = threading.BoundedSemaphore(self.max_concurrency)
        self.session = requests.Session()  # keeps connections open between batches
        adapter = requests.adapters.HTTPAdapter(pool_connections=1, pool_maxsize=self.max_concurrency)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        if self.token:
            self.session.headers["Authorization"] = f"Bearer {self.token}"

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k not in ("slots", "session")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._connect()

    def __repr__(self) -> str:
        return f"HttpRetriever({self.url!r}, top_k={self.top_k})"

    def search(self, queries: Sequence[str], k: int | None = None) -> list[list[Hit]]:
        """Top-k hits for each query, in order; a query repeated in the batch is sent once."""
        if not queries:
            return BatchHits([], 0)
        keys = [q[:self.max_query_chars] if isinstance(q, str) else "" for q in queries]
        distinct = list(dict.fromkeys(keys))
        return BatchHits.of_distinct(keys, distinct, self._post(distinct, k or self.top_k, self.retries))

    def close(self) -> None:
        self.session.close()

    def _post(self, queries: list[str], k: int, retries: int) -> list[list[Hit]]:
        payload = {"queries": queries, "topk": k, "return_scores": True}
        for attempt in range(retries + 1):
            failure = None
            try:
                with self.slots:
                    response = self.session.post(self.url, json=payload, timeout=self.timeout_s)
            except requests.Timeout:
                failure = f"no answer within {self.timeout_s:g} s"
            except requests.RequestException as e:
                failure = f"unreachable ({type(e).__name__})"
            else:
                if response.status_code not in RETRY_STATUS:
                    return self._hits(response, len(queries))
                failure = f"HTTP {response.status_code}"
            if attempt < retries:
                time.sleep(self.backoff_s * 2 ** attempt)
        tries = f" after {retries + 1} tries" if retries else ""
        raise RetrieverHTTPError(f"retriever.url {self.url}: {failure}{tries} (is the retrieval server running? "
                                 "python -m kr1.serve --index DIR starts one)")

    def _hits(self, response: requests.Response, count: int) -> list[list[Hit]]:
        where = f"retriever.url {self.url}"
        if response.status_code == 401:
            raise RetrieverHTTPError(f"{where}: HTTP 401 (set KR1_RETRIEVER_TOKEN to the server's bearer token)")
        if not response.ok:
            raise RetrieverHTTPError(f"{where}: HTTP {response.status_code} {response.text[:200]!r}")
        try:
            result = response.json()["result"]
        except (ValueError, KeyError, TypeError):
            raise RetrieverHTTPError(f"{where}: answer is not JSON with a 'result' list") from None
        if not isinstance(result, list) or len(result) != count:
            raise RetrieverHTTPError(f"{where}: 'result' must hold one list per query ({count})")
        try:
            return [[_hit(item, f"{where}: result[{i}][{rank}]") for rank, item in enumerate(items)]
                    for i, items in enumerate(result)]
        except (DataError, TypeError, ValueError) as e:
            raise RetrieverHTTPError(first_line(e)) from None


def _hit(item: Any, where: str) -> Hit:
    """One entry of a result list: {"document": row, "score": s}, or the bare row (return_scores false)."""
    row, score = (item["document"], item.get("score", 0.0)) if isinstance(item, dict) and "document" in item \
        else (item, 0.0)
    passage = passage_from_row(row, where)  # {"id", "contents"} or {"id", "title", "text"}, as corpus rows
    # the protocol carries no corpus position: index -1 (only the pool's merge of shards orders by it)
    return Hit(-1, passage.id, passage.title, passage.text, float(score))


def document(hit: Hit) -> dict[str, str]:
    """A hit as the protocol's document: a wiki-18 row, the quoted title on the first line of `contents`."""
    return {"id": hit.id, "contents": f'"{hit.title}"\n{hit.text}'}
