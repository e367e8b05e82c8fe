// Self-hosted WCF echo service.
// usage: EchoService.exe nettcp|basichttp LISTEN_URI [ENDPOINT_ADDRESS]
// With ENDPOINT_ADDRESS the endpoint's logical address is ENDPOINT_ADDRESS and
// it physically listens on LISTEN_URI (ListenUriMode.Explicit), i.e. the setup
// of a service sitting behind a relay that forwards the public address.
// Prints one "READY ..." line on stdout when the host is open; runs until
// stdin reaches EOF (or forever with ECHO_IGNORE_STDIN=1) or the process is
// killed (SIGTERM terminates mono at once, exit status -15).
// Env: ECHO_NOTIFY_FILE (Notify appends lines there), ECHO_ADDRESS_FILTER
// (=exact: keep WCF's exact To-header match; default: accept any To).
using System;
using System.IO;
using System.ServiceModel;
using System.ServiceModel.Channels;
using System.ServiceModel.Description;
using System.ServiceModel.Dispatcher;

namespace RelaydInterop
{
    [ServiceBehavior(AddressFilterMode = AddressFilterMode.Any,
                     InstanceContextMode = InstanceContextMode.Single,
                     ConcurrencyMode = ConcurrencyMode.Multiple)]
    public class EchoImpl : IEcho
    {
        static readonly object notifyLock = new object();

        public string Echo(string text)
        {
            return "echo: " + text;
        }

        public void Notify(string text)
        {
            string path = Environment.GetEnvironmentVariable("ECHO_NOTIFY_FILE");
            Console.Error.WriteLine("NOTIFY " + text);
            if (!string.IsNullOrEmpty(path))
            {
                lock (notifyLock)
                {
                    File.AppendAllText(path, text + "\n");
                }
            }
        }
    }

    // Mono's ServiceBehaviorAttribute ignores AddressFilterMode (its
    // ApplyDispatchBehavior never touches EndpointDispatcher.AddressFilter),
    // so the SOAP To header is still matched exactly against the endpoint
    // address. This behavior installs the match-all filter explicitly.
    public class MatchAnyAddressBehavior : IEndpointBehavior
    {
        public void AddBindingParameters(ServiceEndpoint endpoint, BindingParameterCollection parameters) { }
        public void ApplyClientBehavior(ServiceEndpoint endpoint, ClientRuntime clientRuntime) { }
        public void ApplyDispatchBehavior(ServiceEndpoint endpoint, EndpointDispatcher endpointDispatcher)
        {
            endpointDispatcher.AddressFilter = new MatchAllMessageFilter();
        }
        public void Validate(ServiceEndpoint endpoint) { }
    }

    public static class EchoServiceMain
    {
        public static int Main(string[] args)
        {
            if (args.Length < 2 || args.Length > 3)
            {
                Console.Error.WriteLine("usage: EchoService.exe nettcp|basichttp LISTEN_URI [ENDPOINT_ADDRESS]");
                return 2;
            }
            string kind = args[0];
            Uri listenUri = new Uri(args[1]);
            Uri endpointAddress = args.Length == 3 ? new Uri(args[2]) : listenUri;

            ServiceHost host = null;
            try
            {
                host = new ServiceHost(typeof(EchoImpl));
                ServiceEndpoint ep = host.AddServiceEndpoint(
                    typeof(IEcho), Bindings.Create(kind), endpointAddress);
                if (args.Length == 3)
                {
                    ep.ListenUri = listenUri;
                    ep.ListenUriMode = ListenUriMode.Explicit;
                }
                // ECHO_ADDRESS_FILTER=exact keeps WCF's default To-header
                // matching; anything else (default) accepts any To.
                string filterMode = Environment.GetEnvironmentVariable("ECHO_ADDRESS_FILTER");
                if (filterMode != "exact")
                    ep.Behaviors.Add(new MatchAnyAddressBehavior());
                host.UnknownMessageReceived += delegate(object sender, UnknownMessageReceivedEventArgs ev) {
                    Console.Error.WriteLine("UNKNOWN_MESSAGE to=" + ev.Message.Headers.To + " action=" + ev.Message.Headers.Action);
                };
                ServiceDebugBehavior dbg = host.Description.Behaviors.Find<ServiceDebugBehavior>();
                if (dbg == null)
                {
                    dbg = new ServiceDebugBehavior();
                    host.Description.Behaviors.Add(dbg);
                }
                dbg.IncludeExceptionDetailInFaults = true;
                host.Open();
            }
            catch (Exception e)
            {
                Console.Error.WriteLine("FAILED to open host: " + e.GetType().FullName + ": " + e.Message);
                return 1;
            }

            Console.WriteLine("READY " + kind + " listen=" + listenUri + " address=" + endpointAddress);
            Console.Out.Flush();

            // Block until stdin closes (harness closes it or just kills us).
            // ECHO_IGNORE_STDIN=1: never look at stdin (for stdin=/dev/null);
            // then only a signal ends the process.
            if (Environment.GetEnvironmentVariable("ECHO_IGNORE_STDIN") == "1")
                System.Threading.Thread.Sleep(System.Threading.Timeout.Infinite);
            try
            {
                while (Console.In.ReadLine() != null) { }
            }
            catch (Exception) { }

            // Mono's ServiceHost.Close can hang (e.g. on idle HTTP keep-alive
            // connections), so close in the background and exit regardless.
            ServiceHost h = host;
            System.Threading.Thread closer = new System.Threading.Thread(delegate() {
                try { h.Close(TimeSpan.FromSeconds(2)); } catch (Exception) { try { h.Abort(); } catch (Exception) { } }
            });
            closer.IsBackground = true;
            closer.Start();
            closer.Join(TimeSpan.FromSeconds(3));
            Environment.Exit(0);
            return 0;
        }
    }
}
