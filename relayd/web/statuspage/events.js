// The connectivity stream for relayd's status page: GET /$relayd/connectivity/stream, server-sent
// events (relayd.web.connectivity), read with fetch because EventSource cannot send the
// Authorization header.  Each event block ("id: ...", "event: NAME", "data: {json}", blank line)
// goes to onEvent({id, name, data}); onState(text) says whether the stream is live.  After a
// break it reconnects with Last-Event-ID, so events in between are replayed by the relay.
"use strict";

window.RelaydEvents = (function () {
  const URL = "../connectivity/stream";   // from /$relayd/ui/
  const RETRY_MS = 2000;                  // after a break (the relay's own "retry:" is the same)
  const BUSY_RETRY_MS = 15000;            // after a 503: the relay serves its maximum of streams
  const MAX_BLOCK = 64 * 1024;            // an event block longer than this ends the stream

  function parse(block) {
    let id = null, name = null;
    const data = [];
    for (const line of block.split("\n")) {
      if (!line || line.startsWith(":")) continue;  // a comment (heartbeat)
      const colon = line.indexOf(":");
      const field = colon < 0 ? line : line.slice(0, colon);
      let value = colon < 0 ? "" : line.slice(colon + 1);
      if (value.startsWith(" ")) value = value.slice(1);
      if (field === "data") data.push(value);
      else if (field === "id") id = value;
      else if (field === "event") name = value;
    }
    return name === null ? null : {id: id, name: name, data: data.join("\n")};
  }

  class Watch {
    constructor(token, onEvent, onState) {
      this.token = token;
      this.onEvent = onEvent;
      this.onState = onState;
      this.last = null;
      this.abort = null;
      this.stopped = false;
      this.run();
    }

    async run() {
      while (!this.stopped) {
        let delay = RETRY_MS;
        this.abort = new AbortController();
        try {
          const headers = {"Authorization": this.token};
          if (this.last !== null) headers["Last-Event-ID"] = this.last;
          const response = await fetch(URL, {headers: headers, cache: "no-store", credentials: "omit",
                                             redirect: "error", signal: this.abort.signal});
          if (response.status === 401 || response.status === 403) {
            this.onState("not allowed (" + response.status + ")");
            return;                       // the page's polling signs out
          }
          if (!response.ok) {
            this.onState("not available (" + response.status + "); trying again");
            delay = response.status === 503 ? BUSY_RETRY_MS : RETRY_MS;
            await response.body.cancel();
          } else {
            this.onState("live");
            await this.read(response.body.getReader());
            if (!this.stopped) this.onState("reconnecting");
          }
        } catch (err) {
          if (this.stopped) return;
          this.onState("reconnecting");
        }
        await new Promise((resolve) => setTimeout(resolve, delay));
      }
    }

    async read(reader) {
      const decoder = new TextDecoder();
      let buffer = "";
      for (;;) {
        const {value, done} = await reader.read();
        if (done || this.stopped) return;
        buffer += decoder.decode(value, {stream: true});
        let end;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          const event = parse(buffer.slice(0, end));
          buffer = buffer.slice(end + 2);
          if (event !== null) {
            if (event.id !== null) this.last = event.id;
            this.onEvent(event);
          }
        }
        if (buffer.length > MAX_BLOCK) {
          await reader.cancel();
          return;
        }
      }
    }

    stop() {
      this.stopped = true;
      if (this.abort !== null) this.abort.abort();
    }
  }

  return {watch: (token, onEvent, onState) => new Watch(token, onEvent, onState)};
})();
