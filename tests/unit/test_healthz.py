"""``/$relayd/healthz`` (issue 12 item 4): 200 ``ok`` while the relay serves, 503 ``stopping`` from
the moment its service stops; no token, no details.  In process: the relay's service tree built
from settings, its management site rendering the probe."""

from twisted.internet.task import Clock
from twisted.web.test.requesthelper import DummyRequest

from relayd import config
from relayd.relay_service import RelayService


def probe(service):
    request = DummyRequest([b"healthz"])
    request.path = b"/$relayd/healthz"
    body = service.site.management.render(request)
    return request.responseCode or 200, body


def test_healthz_is_ok_while_serving_and_503_once_stopping(tmp_path):
    settings = config.parse({"relay": {"data_dir": str(tmp_path)}})
    service = RelayService(settings, reactor=Clock())
    assert probe(service) == (200, b"ok\n")  # no token asked
    service.stopService()
    assert probe(service) == (503, b"stopping\n")
