"""SpatialQueryClient over a real rclpy service (loopback DDS, in-process): a first request whose
answer is lost (Fast DDS drops a response while the client's reader is still being matched) is
sent again; once the client has an answer, a lost one is a timeout, not a silent retry."""

from __future__ import annotations

import threading

import pytest

pytestmark = pytest.mark.timeout(60)


class LossyServer:
    """A real SpatialQuery service whose first ``lose`` responses never leave the node."""

    def __init__(self, node, name: str, lose: int):
        from rls3_msgs.srv import SpatialQuery

        self.requests = 0
        self.lose = lose
        self._lock = threading.Lock()
        self.srv = node.create_service(SpatialQuery, name, self._on_query)
        send = self.srv.send_response

        def lossy_send(response, header):
            with self._lock:
                if self.lose > 0:
                    self.lose -= 1
                    return
            send(response, header)

        self.srv.send_response = lossy_send

    def _on_query(self, request, response):
        with self._lock:
            self.requests += 1
            response.success, response.answer = True, f"answer {self.requests}"
        return response


def test_a_first_request_whose_answer_is_lost_is_sent_again(rclpy_node):
    from rls3_ros.ros.client import SpatialQueryClient

    server = LossyServer(rclpy_node, "/resend_test/query", lose=2)
    client = SpatialQueryClient(rclpy_node, "/resend_test/query")
    assert client.wait_for_service(20)
    a = client.where_is("mug", "lamp")  # lost after 1 s, lost after 2 s more, answered
    assert a.success and a.answer == "answer 3"
    assert server.requests == 3


def test_after_a_first_answer_a_lost_one_is_a_timeout(rclpy_node):
    from rls3_ros.ros.client import SpatialQueryClient, SpatialQueryError

    server = LossyServer(rclpy_node, "/resend_test/query2", lose=0)
    client = SpatialQueryClient(rclpy_node, "/resend_test/query2")
    assert client.wait_for_service(20)
    assert client.where_is("mug", "lamp").answer == "answer 1"
    server.lose = 1
    with pytest.raises(SpatialQueryError, match="no answer"):
        client.call(client.make_request("where", "mug", "lamp"), timeout=1.5)
    assert server.requests == 2  # sent once, not again
