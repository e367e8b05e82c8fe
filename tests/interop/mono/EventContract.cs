// The one-way event contract of the relayd Mono interop peers (issue 11: publishing over net.tcp).
using System.ServiceModel;

namespace RelaydInterop
{
    [ServiceContract(Namespace = "http://relayd.test/events")]
    public interface IEvents
    {
        [OperationContract(IsOneWay = true)]
        void Publish(int seq, string text);
    }
}
