"""Fetching http(s) ``image_url`` parts, when the operator turns it on, without SSRF.

A URL is fetched only when its host is on ``remote_images.allow_hosts``; the host is resolved
once and every address it resolves to must be public (no private, loopback, link-local,
multicast, reserved or unspecified address), and the connection goes to that checked address
(so a second DNS answer cannot point it elsewhere). Redirects are not followed; the body must
say ``image/*`` and stay under ``limits.max_image_bytes``. The bytes then go through the same
decode checks as data URLs, and the backend receives them as a data URL.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
from typing import Any
from urllib.parse import urlsplit

import pybase64

from vlroute.serve.config import GatewayConfig
from vlroute.serve.requests import RequestError


def image_urls(body: dict[str, Any]) -> list[str]:
    """The http(s) image URLs of a request (malformed parts are left to ``prompt_of``)."""
    found = []
    messages = body.get("messages")
    for message in messages if isinstance(messages, list) else ():
        parts = message.get("content") if isinstance(message, dict) else None
        for part in parts if isinstance(parts, list) else ():
            url = part.get("image_url") if isinstance(part, dict) else None
            url = url.get("url") if isinstance(url, dict) else url
            if isinstance(url, str) and url.startswith(("http://", "https://")):
                found.append(url)
    return found


def host_allowed(host: str, allow: list[str]) -> bool:
    host = host.lower().rstrip(".")
    return any(host == a or (a.startswith("*.") and host.endswith(a[1:])) for a in allow)


NAT64 = ipaddress.ip_network("64:ff9b::/96")


def public(address: str) -> bool:
    """True for a globally routable unicast address (an IPv6 address that carries an IPv4
    one, mapped, 6to4 or NAT64, is judged by the IPv4 address)."""
    ip: ipaddress.IPv4Address | ipaddress.IPv6Address = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        elif ip.sixtofour is not None:
            ip = ip.sixtofour
        elif ip in NAT64:
            ip = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return ip.is_global and not (ip.is_multicast or ip.is_reserved or ip.is_unspecified)


async def resolve(host: str, port: int) -> list[str]:
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port,
                                                             type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        raise RequestError(f"image host {host!r} does not resolve.", param="image_url") \
            from None
    return sorted({str(info[4][0]) for info in infos})


async def fetch(url: str, config: GatewayConfig, session: Any) -> tuple[bytes, str]:
    """The image at ``url`` and its media type, or a 4xx :class:`RequestError` saying why not."""
    import aiohttp

    settings = config.remote_images
    if not settings.enabled:
        raise RequestError("remote image URLs are disabled on this gateway; send the image as "
                           "a data URL (data:image/png;base64,...).", param="image_url")
    parts = urlsplit(url)
    host = parts.hostname or ""
    if not host_allowed(host, settings.allow_hosts):
        raise RequestError(f"image host {host!r} is not on this gateway's allow list.",
                           status=403, param="image_url")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise RequestError(f"image URL has a bad port: {url[:80]!r}.",
                           param="image_url") from None
    addresses = await resolve(host, port)
    blocked = [a for a in addresses if not public(a)]
    if blocked or not addresses:
        raise RequestError(f"image host {host!r} resolves to a private, loopback or "
                           f"link-local address ({', '.join(blocked)}); refused.",
                           status=403, param="image_url")
    pinned = addresses[0]
    netloc = f"[{pinned}]:{port}" if ":" in pinned else f"{pinned}:{port}"
    target = parts._replace(netloc=netloc).geturl()
    limit = config.limits.max_image_bytes
    timeout = aiohttp.ClientTimeout(total=settings.timeout_s)
    try:
        async with session.get(target, headers={"Host": parts.netloc.rpartition("@")[2]},
                               server_hostname=host if parts.scheme == "https" else None,
                               allow_redirects=False, timeout=timeout) as response:
            if response.status != 200:
                raise RequestError(f"image URL answered HTTP {response.status} (redirects are "
                                   "not followed).", param="image_url")
            kind = response.headers.get("content-type", "")
            if not kind.startswith("image/"):
                raise RequestError(f"image URL served {kind or 'no content type'!r}, not "
                                   "image/*.", param="image_url")
            if int(response.headers.get("content-length") or 0) > limit:
                raise RequestError(f"image larger than {limit} bytes.", status=413,
                                   param="image_url")
            data = bytearray()
            async for chunk in response.content.iter_chunked(65536):
                data += chunk
                if len(data) > limit:
                    raise RequestError(f"image larger than {limit} bytes.", status=413,
                                       param="image_url")
            return bytes(data), kind.split(";")[0].strip().lower()
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise RequestError(f"image URL could not be fetched ({type(exc).__name__}).",
                           param="image_url") from None


async def fetch_all(body: dict[str, Any], config: GatewayConfig, session: Any
                    ) -> dict[str, str]:
    """Each http(s) image URL of the request -> the data URL of its fetched bytes."""
    urls = list(dict.fromkeys(image_urls(body)))
    if not urls:
        return {}
    if len(urls) > config.limits.max_images:
        raise RequestError(f"{len(urls)} images; this gateway takes at most "
                           f"{config.limits.max_images}.", status=413, param="messages")
    tasks = [asyncio.ensure_future(fetch(u, config, session)) for u in urls]
    try:
        got = await asyncio.gather(*tasks)
    except BaseException:           # one refused: stop fetching the others
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
    return {u: _data_url(data, kind) for u, (data, kind) in zip(urls, got, strict=True)}


def _data_url(data: bytes, kind: str) -> str:
    if not re.fullmatch(r"image/[a-z0-9.+-]+", kind):
        kind = "image/png"
    return f"data:{kind};base64,{pybase64.b64encode(data).decode()}"


def inline(body: dict[str, Any], data_urls: dict[str, str]) -> dict[str, Any]:
    """A copy of ``body`` with each fetched URL replaced by its data URL."""
    if not data_urls:
        return body
    messages = []
    for message in body["messages"]:
        parts = message.get("content")
        if isinstance(parts, list):
            parts = [_swap(p, data_urls) for p in parts]
            message = {**message, "content": parts}
        messages.append(message)
    return {**body, "messages": messages}


def _swap(part: Any, data_urls: dict[str, str]) -> Any:
    if not isinstance(part, dict) or part.get("type") != "image_url":
        return part
    url = part.get("image_url")
    if isinstance(url, dict) and url.get("url") in data_urls:
        return {**part, "image_url": {**url, "url": data_urls[url["url"]]}}
    if isinstance(url, str) and url in data_urls:
        return {**part, "image_url": data_urls[url]}
    return part
