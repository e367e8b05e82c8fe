// WCF echo client.
// usage: EchoClient.exe nettcp|basichttp ENDPOINT_URI [VIA_URI] TEXT [--oneway]
// VIA_URI: connect physically to VIA_URI while addressing ENDPOINT_URI
// (ChannelFactory.CreateChannel(address, via), the equivalent of
// ClientViaBehavior, which Mono does not implement); needed when going
// through the relay.
// Prints Echo(TEXT) on stdout and exits 0; with --oneway calls Notify(TEXT)
// and prints "sent". On error prints details to stderr and exits 1.
using System;
using System.Collections.Generic;
using System.ServiceModel;
using System.ServiceModel.Description;

namespace RelaydInterop
{
    public static class EchoClientMain
    {
        const string FramingFaultPrefix = "http://schemas.microsoft.com/ws/2006/05/framing/faults/";

        static void Describe(Exception e)
        {
            int depth = 0;
            for (Exception cur = e; cur != null; cur = cur.InnerException, depth++)
            {
                string prefix = depth == 0 ? "ERROR " : "INNER ";
                Console.Error.WriteLine(prefix + cur.GetType().FullName + ": " + cur.Message);
                FaultException fe = cur as FaultException;
                if (fe != null)
                {
                    FaultCode code = fe.Code;
                    while (code != null)
                    {
                        Console.Error.WriteLine("FAULTCODE " + code.Namespace + "#" + code.Name);
                        code = code.SubCode;
                    }
                    if (fe.Action != null)
                        Console.Error.WriteLine("FAULTACTION " + fe.Action);
                }
                // Mono's net.tcp client turns a framing Fault record (0x08)
                // received instead of the PreambleAck into
                // FaultException(faultUri): the message IS the fault URI.
                if (fe != null && fe.Message != null && fe.Message.StartsWith(FramingFaultPrefix))
                    Console.Error.WriteLine("FRAMING_FAULT " + fe.Message);
                if (cur is EndpointNotFoundException)
                    Console.Error.WriteLine("ENDPOINT_NOT_FOUND");
                if (cur is ProtocolException)
                    Console.Error.WriteLine("PROTOCOL_ERROR");
            }
            if (Environment.GetEnvironmentVariable("ECHO_CLIENT_TRACE") != null)
                Console.Error.WriteLine(e.ToString());
        }

        public static int Main(string[] args)
        {
            List<string> pos = new List<string>();
            bool oneway = false;
            foreach (string a in args)
            {
                if (a == "--oneway") oneway = true;
                else pos.Add(a);
            }
            if (pos.Count < 3 || pos.Count > 4)
            {
                Console.Error.WriteLine("usage: EchoClient.exe nettcp|basichttp ENDPOINT_URI [VIA_URI] TEXT [--oneway]");
                return 2;
            }
            string kind = pos[0];
            string endpoint = pos[1];
            string via = pos.Count == 4 ? pos[2] : null;
            string text = pos[pos.Count - 1];

            ChannelFactory<IEcho> factory = null;
            IEcho proxy = null;
            try
            {
                var binding = Bindings.Create(kind);
                // ECHO_CLIENT_TIMEOUT (seconds, default 30): open/send/receive timeout.
                double secs = 30;
                string envTimeout = Environment.GetEnvironmentVariable("ECHO_CLIENT_TIMEOUT");
                if (!string.IsNullOrEmpty(envTimeout))
                    secs = double.Parse(envTimeout, System.Globalization.CultureInfo.InvariantCulture);
                TimeSpan t = TimeSpan.FromSeconds(secs);
                binding.OpenTimeout = t;
                binding.SendTimeout = t;
                binding.ReceiveTimeout = t;
                binding.CloseTimeout = TimeSpan.FromSeconds(5);
                EndpointAddress address = new EndpointAddress(endpoint);
                factory = new ChannelFactory<IEcho>(binding, address);
                // Mono's ClientViaBehavior throws NotImplementedException from
                // AddBindingParameters, so pass the via to CreateChannel instead
                // (same effect: connect to VIA, To header = ENDPOINT).
                proxy = via != null
                    ? factory.CreateChannel(address, new Uri(via))
                    : factory.CreateChannel();
                if (oneway)
                {
                    proxy.Notify(text);
                    Console.WriteLine("sent");
                }
                else
                {
                    Console.WriteLine(proxy.Echo(text));
                }
                try { ((IClientChannel)proxy).Close(); } catch (Exception) { ((IClientChannel)proxy).Abort(); }
                try { factory.Close(); } catch (Exception) { factory.Abort(); }
                return 0;
            }
            catch (Exception e)
            {
                Describe(e);
                try { if (proxy != null) ((IClientChannel)proxy).Abort(); } catch (Exception) { }
                try { if (factory != null) factory.Abort(); } catch (Exception) { }
                return 1;
            }
        }
    }
}
