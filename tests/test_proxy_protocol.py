"""`--proxy-protocol`: a load balancer's PROXY header (v1 or v2) names the client; without one, 400."""

from __future__ import annotations

import json
import struct

from conftest import raw_request

GET = b'GET /who HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n'
V2_SIGNATURE = b'\r\n\r\n\x00\r\nQUIT\n'


def environ_of(response: bytes) -> dict[str, str]:
    assert response.startswith(b'HTTP/1.1 200 OK\r\n'), response[:100]
    return json.loads(response.split(b'\r\n\r\n', 1)[1])['environ']


def test_v1_and_v2_headers_set_the_client_address(serve):
    served = serve('proto:environ_dump', '--proxy-protocol')
    v1 = raw_request(served.port, b'PROXY TCP4 203.0.113.7 10.0.0.1 51234 80\r\n' + GET)
    assert environ_of(v1)['REMOTE_ADDR'] == '203.0.113.7'
    assert environ_of(v1)['REMOTE_PORT'] == '51234'
    addresses = bytes([198, 51, 100, 9, 10, 0, 0, 1]) + struct.pack('>HH', 8080, 80)
    v2 = raw_request(served.port, V2_SIGNATURE + bytes([0x21, 0x11]) + struct.pack('>H', 12) + addresses + GET)
    assert environ_of(v2)['REMOTE_ADDR'] == '198.51.100.9'


def test_missing_header_from_a_trusted_peer_is_refused(serve):
    served = serve('proto:environ_dump', '--proxy-protocol')
    response = raw_request(served.port, GET)
    assert response.startswith(b'HTTP/1.1 400 Bad Request\r\n')
    assert b'PROXY protocol' in response


def test_untrusted_peers_send_plain_http(serve):
    served = serve('proto:environ_dump', '--proxy-protocol', '--forwarded-allow-ips', '10.9.9.9')
    assert environ_of(raw_request(served.port, GET))['REMOTE_ADDR'] == '127.0.0.1'
