"""The benchmark's sections, one module each: a module of this package that declares
``moduleProvides(IScenario)`` is a section of ``bench/run.py`` (``--only NAME``), of
docs/performance.json (``sections[NAME]``) and of docs/performance.rst (in ``ORDER``).
Adding a section means adding one module here."""

import importlib
import pkgutil

from zope.interface import Attribute, Interface
from zope.interface.verify import verifyObject


class IScenario(Interface):
    """One section of the benchmark: a few cases measured against each other in alternating
    rounds (see ``bench/harness.py``), and the report of them."""

    NAME = Attribute("the section's name: ``--only`` value and key in performance.json")
    TITLE = Attribute("the section's heading in performance.rst")
    ORDER = Attribute("a number: sections run and are reported in increasing ORDER")
    OPTIONS = Attribute("the command-line options it reads (``harness.Option`` objects); "
                        "an Option object shared by several sections is added once")

    def run(harness, args):
        """Measure, with ``harness`` (a ``harness.Harness`` open for this section) and the
        parsed command line ``args``; the section's JSON: a dict with ``settings``,
        ``samples`` ({case: [sample per round]}), ``cpu_percent`` and whatever the report
        needs, or ``{"skipped": why}`` when a tool it needs is missing."""

    def targets(section):
        """The targets of issue 10 this section measures, for ``section`` (a result of ``run``,
        never a skipped one): a list of ``report.target(text, measured, met)`` ([] if none)."""

    def report(section):
        """The reStructuredText lines under the section's heading for ``section``, a result of
        ``run`` (never a skipped one) plus its ``date`` and ``git``."""


def load():
    """Every scenario module of this package, in ORDER (checked against :class:`IScenario`)."""
    modules = []
    for info in pkgutil.iter_modules(__path__):
        module = importlib.import_module("%s.%s" % (__name__, info.name))
        if IScenario.providedBy(module):
            verifyObject(IScenario, module)
            modules.append(module)
    return sorted(modules, key=lambda m: m.ORDER)
