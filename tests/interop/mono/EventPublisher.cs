// WCF one-way publisher over NetTcpBinding (SecurityMode.None), one channel for all messages.
// usage: EventPublisher.exe ENDPOINT_URI COUNT PREFIX
// Calls Publish(i, PREFIX + i) for i = 0 .. COUNT-1 on one channel, closes it, prints
// "sent COUNT" and exits 0; on error prints "ERROR <type>: <message>" (and inner exceptions,
// "FRAMING_FAULT <uri>" for a framing fault) to stderr and exits 1.
using System;
using System.ServiceModel;

namespace RelaydInterop
{
    public static class EventPublisherMain
    {
        public static int Main(string[] args)
        {
            if (args.Length != 3)
            {
                Console.Error.WriteLine("usage: EventPublisher.exe ENDPOINT_URI COUNT PREFIX");
                return 2;
            }
            int count = int.Parse(args[1]);
            ChannelFactory<IEvents> factory = null;
            IEvents proxy = null;
            try
            {
                NetTcpBinding binding = new NetTcpBinding(SecurityMode.None);
                TimeSpan t = TimeSpan.FromSeconds(20);
                binding.OpenTimeout = t;
                binding.SendTimeout = t;
                binding.CloseTimeout = TimeSpan.FromSeconds(5);
                factory = new ChannelFactory<IEvents>(binding, new EndpointAddress(args[0]));
                proxy = factory.CreateChannel();
                for (int i = 0; i < count; i++)
                    proxy.Publish(i, args[2] + i);
                ((IClientChannel)proxy).Close();
                factory.Close();
                Console.WriteLine("sent " + count);
                return 0;
            }
            catch (Exception e)
            {
                for (Exception cur = e; cur != null; cur = cur.InnerException)
                {
                    Console.Error.WriteLine("ERROR " + cur.GetType().FullName + ": " + cur.Message);
                    if (cur is FaultException && cur.Message.StartsWith("http://schemas.microsoft.com/ws/2006/05/framing/faults/"))
                        Console.Error.WriteLine("FRAMING_FAULT " + cur.Message);
                }
                try { if (proxy != null) ((IClientChannel)proxy).Abort(); } catch (Exception) { }
                try { if (factory != null) factory.Abort(); } catch (Exception) { }
                return 1;
            }
        }
    }
}
