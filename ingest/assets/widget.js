/*! SQI Engine share widget. No dependencies; never throws into the host page.
 *
 * <script async src="https://INGEST/widget.js" data-publisher="example.com"
 *         data-channels="facebook,twitter,linkedin,email" data-target="#share"></script>
 *
 * Sends a pageview on load, a share on each button click, and a clickback when
 * a visit arrives through a link this widget shared (tagged ?sqi_ch=<channel>).
 * Events go by navigator.sendBeacon (survives page unload), else fetch keepalive.
 */
(function () {
  "use strict";
  var TAG = "sqi_ch";
  var INTENTS = {
    facebook: "https://www.facebook.com/sharer/sharer.php?u={u}",
    twitter: "https://twitter.com/intent/tweet?url={u}&text={t}",
    linkedin: "https://www.linkedin.com/sharing/share-offsite/?url={u}",
    pinterest: "https://pinterest.com/pin/create/button/?url={u}&description={t}",
    reddit: "https://www.reddit.com/submit?url={u}&title={t}",
    whatsapp: "https://api.whatsapp.com/send?text={t}%20{u}",
    telegram: "https://t.me/share/url?url={u}&text={t}",
    tumblr: "https://www.tumblr.com/widgets/share/tool?canonicalUrl={u}",
    threads: "https://www.threads.net/intent/post?text={t}%20{u}",
    bluesky: "https://bsky.app/intent/compose?text={t}%20{u}",
    email: "mailto:?subject={t}&body={u}",
    sms: "sms:?body={t}%20{u}"
  };

  function safe(fn) {
    return function () {
      try { return fn.apply(this, arguments); } catch (e) { /* the host page must never see our errors */ }
    };
  }

  function uuid() {
    if (window.crypto && crypto.randomUUID) return crypto.randomUUID();
    var b = new Uint8Array(16);
    (window.crypto || {}).getRandomValues ? crypto.getRandomValues(b) : b.forEach(function (_, i) { b[i] = Math.random() * 256; });
    b[6] = (b[6] & 0x0f) | 0x40; b[8] = (b[8] & 0x3f) | 0x80;
    var h = Array.prototype.map.call(b, function (x) { return (x + 256).toString(16).slice(1); }).join("");
    return h.slice(0, 8) + "-" + h.slice(8, 12) + "-" + h.slice(12, 16) + "-" + h.slice(16, 20) + "-" + h.slice(20);
  }

  var script = document.currentScript;
  if (!script || !script.src) return;
  var publisher = script.getAttribute("data-publisher");
  if (!publisher) return;
  var endpoint = new URL("/v1/events", script.src).href;
  var channels = (script.getAttribute("data-channels") || "facebook,twitter,linkedin,email")
    .split(",").map(function (c) { return c.trim().toLowerCase(); }).filter(Boolean);

  function pageUrl() {
    var u = new URL(location.href);
    u.searchParams.delete(TAG);
    u.hash = "";
    return u.href;
  }

  function send(events) {
    var now = Date.now();
    var body = JSON.stringify({ sent_at: now, events: events.map(function (e) {
      e.publisher = publisher; e.url = e.url || pageUrl(); e.event_id = uuid(); e.ts = now;
      if (document.referrer) e.referrer = document.referrer.slice(0, 2048);
      return e;
    }) });
    var sent = false;
    if (navigator.sendBeacon) {
      try { sent = navigator.sendBeacon(endpoint, new Blob([body], { type: "text/plain" })); } catch (e) { sent = false; }
    }
    if (!sent && window.fetch) {
      fetch(endpoint, { method: "POST", body: body, keepalive: true, mode: "cors", credentials: "omit",
        headers: { "Content-Type": "text/plain" } }).catch(function () {});
    }
  }

  function shareUrl(channel) {
    var u = new URL(pageUrl());
    u.searchParams.set(TAG, channel);
    return u.href;
  }

  var onShare = safe(function (channel) {
    send([{ type: "share", channel: channel }]);
    var template = INTENTS[channel];
    var tagged = shareUrl(channel);
    if (template) {
      var target = template.replace("{u}", encodeURIComponent(tagged)).replace("{t}", encodeURIComponent(document.title || ""));
      window.open(target, "_blank", "noopener,noreferrer,width=600,height=500");
    } else if (navigator.share) {
      navigator.share({ url: tagged, title: document.title }).catch(function () {});
    } else if (navigator.clipboard) {
      navigator.clipboard.writeText(tagged).catch(function () {});
    }
  });

  var render = safe(function () {
    var box = document.createElement("div");
    box.className = "sqi-share";
    box.setAttribute("role", "group");
    box.setAttribute("aria-label", "Share this page");
    channels.forEach(function (channel) {
      var button = document.createElement("button");
      button.type = "button";
      button.className = "sqi-share-button sqi-share-" + channel;
      button.setAttribute("data-channel", channel);
      button.textContent = channel.charAt(0).toUpperCase() + channel.slice(1);
      button.style.cssText = "margin:2px;padding:4px 10px;border:1px solid #ccc;border-radius:4px;background:#fff;cursor:pointer;font:inherit";
      button.addEventListener("click", function () { onShare(channel); });
      box.appendChild(button);
    });
    var target = script.getAttribute("data-target");
    var host = target ? document.querySelector(target) : null;
    if (host) host.appendChild(box);
    else if (script.parentNode) script.parentNode.insertBefore(box, script.nextSibling);
  });

  var start = safe(function () {
    var events = [{ type: "pageview" }];
    var params = new URLSearchParams(location.search);
    var via = params.get(TAG);
    if (via) {
      events.push({ type: "clickback", channel: via.toLowerCase() });
      // Drop the tag so that a reload or a re-share does not count again.
      if (history.replaceState) history.replaceState(history.state, "", pageUrl() + location.hash);
    }
    send(events);
    render();
  });

  window.SQIShare = { share: onShare, version: 1 };
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else setTimeout(start, 0);
})();
