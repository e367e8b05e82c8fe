from twisted.application.service import ServiceMaker

relayd = ServiceMaker(
    "relayd",
    "relayd.tap",
    "A self-hosted relay: Azure Relay Hybrid Connections and WCF relay bindings",
    "relayd",
)
