// Shared WCF contract for the relayd Mono interop peers.
using System.ServiceModel;

namespace RelaydInterop
{
    [ServiceContract(Namespace = "http://relayd.test/echo")]
    public interface IEcho
    {
        [OperationContract]
        string Echo(string text);

        [OperationContract(IsOneWay = true)]
        void Notify(string text);
    }

    public static class Bindings
    {
        // kind: "nettcp" or "basichttp"; no security in both cases.
        public static System.ServiceModel.Channels.Binding Create(string kind)
        {
            switch (kind)
            {
                case "nettcp":
                    return new NetTcpBinding(SecurityMode.None);
                case "basichttp":
                    return new BasicHttpBinding(BasicHttpSecurityMode.None);
                default:
                    throw new System.ArgumentException("binding must be nettcp or basichttp, got: " + kind);
            }
        }
    }
}
