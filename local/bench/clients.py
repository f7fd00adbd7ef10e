"""The baseline clients, each run in a process of its own so its peak RSS is its own:
``python -m local.bench.clients naive-httpx|msgraph-sdk --url URL --provider ID --count N --prefix P``.

Both write ``count`` items one at a time, in order, as the obvious loop would: no batching, no
concurrency. They print one JSON line: items, seconds, answers by status, peak RSS (MiB).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sys
import time
from collections import Counter
from typing import Any

import httpx

from local.bench.emulator import PROVIDER_PREFIX, app_token, content_body


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def naive_httpx(url: str, provider_id: str, count: int, prefix: str) -> Counter[int]:
    """PATCH one item at a time with httpx (the upsert by externalId, as the docs show it)."""
    statuses: Counter[int] = Counter()
    headers = {"Authorization": f"Bearer {app_token()}"}
    with httpx.Client(base_url=url, timeout=60) as client:
        for index in range(count):
            path = f"{PROVIDER_PREFIX}/{provider_id}/learningContents(externalId='{prefix}{index:07d}')"
            statuses[client.patch(path, json=content_body(index), headers=headers).status_code] += 1
    return statuses


def msgraph_sdk(url: str, provider_id: str, count: int, prefix: str) -> Counter[int]:
    """The same loop with the official msgraph-sdk (GraphServiceClient, its default middleware: retries,
    redirects, telemetry), pointed at the emulator and given the local stack's app token."""
    from kiota_abstractions.api_error import APIError
    from kiota_abstractions.authentication import (
        AccessTokenProvider,
        AllowedHostsValidator,
        BaseBearerTokenAuthenticationProvider,
    )
    from msgraph.generated.models.learning_content import LearningContent
    from msgraph.graph_request_adapter import GraphRequestAdapter
    from msgraph.graph_service_client import GraphServiceClient

    token = app_token()

    class LocalToken(AccessTokenProvider):  # type: ignore[misc, unused-ignore]  # Any without the SDK
        async def get_authorization_token(self, uri: str, additional_authentication_context: Any = None) -> str:
            return token

        def get_allowed_hosts_validator(self) -> AllowedHostsValidator:
            return AllowedHostsValidator([])

    adapter = GraphRequestAdapter(BaseBearerTokenAuthenticationProvider(LocalToken()))
    adapter.base_url = f"{url}/v1.0"
    client = GraphServiceClient(request_adapter=adapter)
    contents = client.employee_experience.learning_providers.by_learning_provider_id(provider_id)

    async def loop() -> Counter[int]:
        statuses: Counter[int] = Counter()
        for index in range(count):
            body = content_body(index)
            item = LearningContent(
                title=body["title"],
                description=body["description"],
                content_web_url=body["contentWebUrl"],
                language_tag=body["languageTag"],
                number_of_pages=body["numberOfPages"],
                # No duration: msgraph-sdk 1.65 writes a timedelta as "0:45:00" (seen on the wire), not the
                # ISO 8601 "PT45M" Edm.Duration takes, so the emulator (strict) refuses the whole item.
                format=body["format"],
                is_active=True,
            )
            try:
                await contents.learning_contents_with_external_id(f"{prefix}{index:07d}").patch(item)
                statuses[202] += 1
            except APIError as exc:
                statuses[int(exc.response_status_code or 0)] += 1
        return statuses

    return asyncio.run(loop())


CLIENTS = {"naive-httpx": naive_httpx, "msgraph-sdk": msgraph_sdk}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m local.bench.clients")
    parser.add_argument("client", choices=sorted(CLIENTS))
    parser.add_argument("--url", required=True)
    parser.add_argument("--provider", required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--prefix", default="baseline-")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    statuses = CLIENTS[args.client](args.url, args.provider, args.count, args.prefix)
    elapsed = time.perf_counter() - started
    result = {
        "items": args.count,
        "seconds": elapsed,
        "statuses": {str(k): v for k, v in statuses.items()},
        "peakRssMiB": _peak_rss_mib(),
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
