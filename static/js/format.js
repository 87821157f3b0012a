// Number, time and packet formatting shared by the views.
const ICMP = {"icmp:8": "echo-request", "icmp:0": "echo-reply", "icmp:3": "unreachable",
  "icmp:11": "time-exceeded", "icmpv6:128": "echo-request", "icmpv6:129": "echo-reply",
  "icmpv6:1": "unreachable", "icmpv6:135": "neighbour-solicit", "icmpv6:136": "neighbour-advert",
  "icmpv6:133": "router-solicit"};

export function hex(n) { return "0x" + (n >>> 0).toString(16); }

export function int(n) { return Number(n || 0).toLocaleString("en-US"); }

// ns -> "12.345 µs" / "1.234 ms" / "2.500 s"
export function dur(ns, digits = 3) {
  const a = Math.abs(ns);
  if (a < 1e6) return (ns / 1e3).toFixed(digits) + " µs";
  if (a < 1e9) return (ns / 1e6).toFixed(digits) + " ms";
  return (ns / 1e9).toFixed(digits) + " s";
}

export function durShort(ns) {
  const a = Math.abs(ns);
  if (a < 1e4) return (ns / 1e3).toFixed(2) + "µs";
  if (a < 1e6) return (ns / 1e3).toFixed(1) + "µs";
  if (a < 1e9) return (ns / 1e6).toFixed(1) + "ms";
  return (ns / 1e9).toFixed(2) + "s";
}

export function endpoint(addr, port, fam) {
  const a = fam === "ipv6" && port !== null && port !== undefined ? `[${addr}]` : addr;
  return port === null || port === undefined ? a : `${a}:${port}`;
}

export function icmpName(t) {
  if (!t || t.icmp_type === null || t.icmp_type === undefined) return "";
  return ICMP[`${t.proto}:${t.icmp_type}`] || `type ${t.icmp_type}/${t.icmp_code}`;
}

// {family, proto, src, dst, sport, dport, icmp_type} -> "icmp 127.0.0.1 → 127.0.0.2 echo-request"
export function tuple(t, short = false) {
  if (!t) return "(no IP header seen)";
  const arrow = short ? "→" : " → ";
  let text = `${t.proto || t.family} ${endpoint(t.src, t.sport, t.family)}${arrow}${endpoint(t.dst, t.dport, t.family)}`;
  let icmp = icmpName(t);
  if (short) icmp = icmp.replace("echo-request", "echo-req").replace("echo-reply", "echo-rep");
  if (icmp) text += " " + icmp;
  return text;
}

export function when(epochSeconds) {
  if (!epochSeconds) return "";
  const d = new Date(epochSeconds * 1000);
  const pad = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

// "nice" axis ticks for [0, max]
export function ticks(max, approx = 6) {
  if (!(max > 0)) return [0];
  const raw = max / approx;
  const mag = Math.pow(10, Math.floor(Math.log10(raw)));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((st) => st >= raw) || raw;
  const out = [];
  for (let v = 0; v <= max + step * 1e-9; v += step) out.push(v);
  return out;
}
