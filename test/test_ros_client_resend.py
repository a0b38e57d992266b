"""SpatialQueryClient over a real rclpy service (loopback DDS, in-process): a first request whose
answer is lost (Fast DDS drops a response while the client's reader is still being matched) is
sent again; once the client has an answer, a lost one is a timeout, not a silent retry."""

from __future__ import annotations

import collections
import threading

import pytest

from ros_harness import deadline, poll_until

pytestmark = pytest.mark.timeout(60)


class LossyServer:
    """A real SpatialQuery service whose first ``lose`` responses never leave the node, nor any
    response to a request whose subject is ``drop_subject``."""

    def __init__(self, node, name: str, lose: int):
        from rls3_msgs.srv import SpatialQuery

        self.requests = 0
        self.by_subject = collections.Counter()
        self.lose = lose
        self.drop_subject = None
        self._dropped_answers = set()
        self._lock = threading.Lock()
        self.srv = node.create_service(SpatialQuery, name, self._on_query)
        send = self.srv.send_response

        def lossy_send(response, header):
            with self._lock:
                if response.answer in self._dropped_answers:
                    return
                if self.lose > 0:
                    self.lose -= 1
                    return
            send(response, header)

        self.srv.send_response = lossy_send

    def _on_query(self, request, response):
        with self._lock:
            self.requests += 1
            self.by_subject[request.subject] += 1
            response.success, response.answer = True, f"answer {self.requests}"
            if request.subject == self.drop_subject:
                self._dropped_answers.add(response.answer)
        return response


def test_a_first_request_whose_answer_is_lost_is_sent_again(rclpy_node):
    from rls3_ros.ros.client import SpatialQueryClient

    server = LossyServer(rclpy_node, "/resend_test/query", lose=2)
    client = SpatialQueryClient(rclpy_node, "/resend_test/query")
    assert client.wait_for_service(deadline(20))
    # sent again after 1 s, 2 s more, 4 s more ... within the call's timeout (generous: the resend
    # schedule is the client's, the deadline only catches a client that never resends)
    a = client.where_is("mug", "lamp", timeout=deadline(15))  # idle: answered after ~3 s
    assert a.success
    # the first two answers were lost: the answer is to the third request or, on a machine so busy
    # that the client sent again before the third was answered, a later one
    assert server.requests >= 3 and a.answer in {f"answer {k}" for k in range(3, server.requests + 1)}, \
        (a.answer, server.requests)


def test_after_a_first_answer_a_lost_one_is_a_timeout(rclpy_node):
    from rls3_ros.ros.client import SpatialQueryClient, SpatialQueryError

    server = LossyServer(rclpy_node, "/resend_test/query2", lose=0)
    client = SpatialQueryClient(rclpy_node, "/resend_test/query2")
    assert client.wait_for_service(deadline(20))
    assert client.where_is("mug", "lamp", timeout=deadline(60)).success
    # the answers to "cup" are lost (a busy machine may have made the client send "mug" again before
    # its answer came: that late request is answered, it does not take the loss)
    server.drop_subject = "cup"
    with pytest.raises(SpatialQueryError, match="no answer"):
        client.call(client.make_request("where", "cup", "lamp"), timeout=1.5)  # the loss is certain: any timeout
    poll_until(lambda: server.by_subject["cup"] >= 1, 30, "the lost request at the server")
    assert server.by_subject["cup"] == 1  # sent once, not again
