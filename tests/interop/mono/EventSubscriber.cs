// Self-hosted WCF subscriber of IEvents over NetTcpBinding (SecurityMode.None), behind
// `relayd bridge -R`: the endpoint's address is the public relay URI, it listens on LISTEN_URI.
// usage: EventSubscriber.exe LISTEN_URI ENDPOINT_ADDRESS
// Each Publish(seq, text) appends "seq text\n" to EVENT_FILE (env), in the order received
// (single instance, one call at a time).  Prints "READY" when open; exits when stdin closes.
// Built together with EchoContract.cs and EchoService.cs (its MatchAnyAddressBehavior).
using System;
using System.IO;
using System.ServiceModel;
using System.ServiceModel.Description;

namespace RelaydInterop
{
    [ServiceBehavior(InstanceContextMode = InstanceContextMode.Single,
                     ConcurrencyMode = ConcurrencyMode.Single)]
    public class EventsImpl : IEvents
    {
        public void Publish(int seq, string text)
        {
            File.AppendAllText(Environment.GetEnvironmentVariable("EVENT_FILE"), seq + " " + text + "\n");
        }
    }

    public static class EventSubscriberMain
    {
        public static int Main(string[] args)
        {
            if (args.Length != 2)
            {
                Console.Error.WriteLine("usage: EventSubscriber.exe LISTEN_URI ENDPOINT_ADDRESS");
                return 2;
            }
            ServiceHost host = new ServiceHost(typeof(EventsImpl));
            try
            {
                ServiceEndpoint ep = host.AddServiceEndpoint(
                    typeof(IEvents), new NetTcpBinding(SecurityMode.None), new Uri(args[1]));
                ep.ListenUri = new Uri(args[0]);
                ep.ListenUriMode = ListenUriMode.Explicit;
                ep.Behaviors.Add(new MatchAnyAddressBehavior());
                host.Open();
            }
            catch (Exception e)
            {
                Console.Error.WriteLine("FAILED to open host: " + e.GetType().FullName + ": " + e.Message);
                return 1;
            }
            Console.WriteLine("READY listen=" + args[0] + " address=" + args[1]);
            Console.Out.Flush();
            try
            {
                while (Console.In.ReadLine() != null) { }
            }
            catch (Exception) { }
            Environment.Exit(0);
            return 0;
        }
    }
}
