from setuptools import find_packages, setup

setup(
    name="relayd",
    version="0.1.0",
    description="A self-hosted relay service: Azure Relay Hybrid Connections and WCF relay bindings on Twisted",
    long_description=open("README.rst", encoding="utf-8").read(),
    long_description_content_type="text/x-rst",
    license="MIT",
    python_requires=">=3.11",
    packages=find_packages(include=["relayd", "relayd.*"]) + ["twisted.plugins"],
    package_data={"twisted": ["plugins/relayd_plugin.py"]},
    install_requires=[
        "twisted[tls]>=24.3",
        "autobahn>=24.4",
        "zope.interface>=6",
        "lxml>=5",
        "pyOpenSSL>=24",
    ],
    extras_require={
        "test": [
            "pytest>=8",
            "pytest-twisted>=1.14",
            "pytest-timeout>=2.3",
            "psutil>=5.9",
            "hypothesis>=6",
            "requests>=2.31",
            "redis>=5",
            "spyne>=2.14",
            "zeep>=4.2",
        ],
        "docs": ["sphinx>=7"],
        # bench/run.py also uses Debian's wrk and iperf3 (apt-get install wrk iperf3 socat)
        "bench": ["py-spy>=0.3", "magic-wormhole-transit-relay>=0.3"],
    },
    entry_points={"console_scripts": ["relayd = relayd.cli:main"]},
)
