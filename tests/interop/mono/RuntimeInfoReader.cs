// Reads an entity's runtime information from relayd the way Azure Relay's .NET SDK does in
// HybridConnectionListener.GetRuntimeInformationAsync: GET {entity}?api-version=2016-07 with the
// token in Authorization; an Atom *feed* in answer means "no such entity"; otherwise the reader
// moves to the Atom <content> element, then to the first element inside it, and hands that to a
// DataContractSerializer for the contract below (name, namespace and member order as the SDK's
// HybridConnectionRuntimeInformation declares them).  Errors: the text of <Detail>.
//
// usage: mono RuntimeInfoReader.exe ENTITY_URL TOKEN
// prints: "ListenerCount=N RequiresClientAuthorization=B UserMetadata=M CreatedAt=ISO UpdatedAt=ISO"
//         "NOTFOUND feed"  or  "ERROR status detail"
using System;
using System.IO;
using System.Net;
using System.Runtime.Serialization;
using System.Xml;

namespace RelaydInterop
{
    [DataContract(Name = "HybridConnectionDescription",
                  Namespace = "http://schemas.microsoft.com/netservices/2010/10/servicebus/connect")]
    public class RuntimeInformation
    {
        [DataMember(Name = "CreatedAt", IsRequired = false, EmitDefaultValue = false, Order = 2)]
        public DateTime? CreatedAt;

        [DataMember(Name = "UpdatedAt", IsRequired = false, EmitDefaultValue = false, Order = 3)]
        public DateTime? UpdatedAt;

        [DataMember(Name = "RequiresClientAuthorization", IsRequired = false, EmitDefaultValue = false, Order = 4)]
        public bool? RequiresClientAuthorization;

        [DataMember(Name = "UserMetadata", IsRequired = false, EmitDefaultValue = false, Order = 8)]
        public string UserMetadata;

        [DataMember(Name = "ListenerCount", IsRequired = false, EmitDefaultValue = false, Order = 9)]
        public int? ListenerCount;
    }

    public static class RuntimeInfoReaderMain
    {
        const string Atom = "http://www.w3.org/2005/Atom";

        public static int Main(string[] args)
        {
            var request = (HttpWebRequest)WebRequest.Create(args[0] + "?api-version=2016-07");
            request.Headers.Add("X-PROCESS-AT", "ServiceBus");
            request.Headers.Add("Authorization", args[1]);
            HttpWebResponse response;
            try
            {
                response = (HttpWebResponse)request.GetResponse();
            }
            catch (WebException e) when (e.Response != null)
            {
                var failed = (HttpWebResponse)e.Response;
                Console.WriteLine("ERROR {0} {1}", (int)failed.StatusCode, Detail(failed.GetResponseStream()));
                return 0;
            }
            if (response.ContentType.ToLowerInvariant().Replace(" ", "").Contains("type=feed"))
            {
                Console.WriteLine("NOTFOUND feed");
                return 0;
            }
            using (var reader = XmlReader.Create(response.GetResponseStream()))
            {
                reader.ReadToDescendant("content", Atom);
                reader.Read();
                reader.MoveToContent();
                var info = (RuntimeInformation)new DataContractSerializer(typeof(RuntimeInformation)).ReadObject(reader);
                Console.WriteLine("ListenerCount={0} RequiresClientAuthorization={1} UserMetadata={2} CreatedAt={3} UpdatedAt={4}",
                                  info.ListenerCount ?? 0, info.RequiresClientAuthorization ?? true,
                                  info.UserMetadata ?? "", Stamp(info.CreatedAt), Stamp(info.UpdatedAt));
            }
            return 0;
        }

        static string Stamp(DateTime? value)
        {
            return value.HasValue ? value.Value.ToUniversalTime().ToString("yyyy-MM-ddTHH:mm:ss.fffZ") : "none";
        }

        static string Detail(Stream body)
        {
            using (var reader = XmlReader.Create(body))
            {
                return reader.ReadToDescendant("Detail") ? reader.ReadInnerXml() : "";
            }
        }
    }
}
