"""relayd's HTTP resources: the management API and the landing page (see :mod:`relayd.web.site`)."""
