// A small Markdown renderer for chat answers that builds DOM nodes directly.
//
// Safety by construction: every piece of text goes through createTextNode/textContent, elements
// come from a fixed list, and the only attribute taken from the text is a link's href, allowed
// only for http, https and mailto. So `<script>` or `<img onerror=...>` in a model's output is
// shown as text, never parsed as HTML. Images are shown as links (no tracking pixels).
//
// Covers what chat models write: paragraphs, headings, emphasis, inline code, fenced code
// blocks, block quotes, nested lists, GFM tables, rules, links. A half-written answer (an
// unclosed fence mid-stream) renders sensibly and re-renders as more text arrives.

const FENCE = /^ {0,3}(`{3,}|~{3,})\s*([^`\s]*)[^`]*$/;
const HEADING = /^ {0,3}(#{1,6})(?:\s+(.*?))?(?:\s+#+)?\s*$/;
const RULE = /^ {0,3}([-*_])(?:[ \t]*\1){2,}[ \t]*$/;
const QUOTE = /^ {0,3}> ?(.*)$/;
const ITEM = /^( {0,12})([-*+]|\d{1,9}[.)])(?:[ \t]+(.*))?$/;
const TABLE_SEP = /^ {0,3}\|?\s*:?-+:?\s*(?:\|\s*:?-+:?\s*)*\|?\s*$/;

/** Renders `text` into a new DocumentFragment. */
export function renderMarkdown(text, doc = document) {
  const out = doc.createDocumentFragment();
  blocks(text.replace(/\r\n?/g, "\n").split("\n"), out, doc, 0);
  return out;
}

/** True for a URL a link may point to: absolute http(s) or mailto. */
export function safeHref(url) {
  try {
    const u = new URL(url);
    return u.protocol === "http:" || u.protocol === "https:" || u.protocol === "mailto:" ? u.href : null;
  } catch {
    return null;
  }
}

function el(doc, tag, parent, text) {
  const node = doc.createElement(tag);
  if (text !== undefined) node.textContent = text;
  if (parent) parent.appendChild(node);
  return node;
}

function startsBlock(line) {
  return FENCE.test(line) || HEADING.test(line) || RULE.test(line) || QUOTE.test(line) || ITEM.test(line);
}

function blocks(lines, parent, doc, depth) {
  let i = 0;
  while (i < lines.length) {
    const line = lines[i];
    let m;
    if (!line.trim()) {
      i++;
    } else if ((m = FENCE.exec(line))) {
      const fence = m[1];
      const body = [];
      i++;
      while (i < lines.length && !new RegExp(`^ {0,3}${fence[0]}{${fence.length},}\\s*$`).test(lines[i])) body.push(lines[i++]);
      i++; // the closing fence (or the end of a half-written answer)
      codeBlock(doc, parent, m[2], body.join("\n"));
    } else if ((m = HEADING.exec(line))) {
      inline(m[2] || "", el(doc, "h" + m[1].length, parent), doc);
      i++;
    } else if (RULE.test(line)) {
      el(doc, "hr", parent);
      i++;
    } else if (QUOTE.test(line)) {
      const inner = [];
      while (i < lines.length && (m = QUOTE.exec(lines[i]))) {
        inner.push(m[1]);
        i++;
      }
      const quote = el(doc, "blockquote", parent);
      if (depth < 8) blocks(inner, quote, doc, depth + 1);
      else quote.textContent = inner.join("\n");
    } else if (line.includes("|") && i + 1 < lines.length && TABLE_SEP.test(lines[i + 1]) && lines[i + 1].includes("-")) {
      i = table(lines, i, parent, doc);
    } else if (ITEM.test(line)) {
      i = list(lines, i, parent, doc, depth);
    } else {
      const para = [line.trim()];
      i++;
      while (i < lines.length && lines[i].trim() && !startsBlock(lines[i])) para.push(lines[i++].trim());
      inline(para.join("\n"), el(doc, "p", parent), doc);
    }
  }
}

function codeBlock(doc, parent, lang, code) {
  const figure = el(doc, "div", parent);
  figure.className = "code";
  const bar = el(doc, "div", figure);
  bar.className = "code-bar";
  el(doc, "span", bar, lang || "text");
  const copy = el(doc, "button", bar, "Copy");
  copy.type = "button";
  copy.className = "copy";
  copy.setAttribute("aria-label", "Copy code");
  copy.addEventListener("click", () => {
    navigator.clipboard?.writeText(code).then(
      () => (copy.textContent = "Copied"),
      () => (copy.textContent = "Copy failed"),
    );
    setTimeout(() => (copy.textContent = "Copy"), 1500);
  });
  const pre = el(doc, "pre", figure);
  pre.tabIndex = 0;
  const codeEl = el(doc, "code", pre, code);
  if (lang) codeEl.dataset.lang = lang;
}

function splitRow(line) {
  let s = line.trim();
  if (s.startsWith("|")) s = s.slice(1);
  if (s.endsWith("|") && !s.endsWith("\\|")) s = s.slice(0, -1);
  const cells = [];
  let cur = "";
  for (let k = 0; k < s.length; k++) {
    if (s[k] === "\\" && s[k + 1] === "|") {
      cur += "|";
      k++;
    } else if (s[k] === "|") {
      cells.push(cur.trim());
      cur = "";
    } else cur += s[k];
  }
  cells.push(cur.trim());
  return cells;
}

function table(lines, i, parent, doc) {
  const head = splitRow(lines[i]);
  const align = splitRow(lines[i + 1]).map((c) =>
    c.startsWith(":") && c.endsWith(":") ? "center" : c.endsWith(":") ? "right" : c.startsWith(":") ? "left" : "",
  );
  const wrap = el(doc, "div", parent);
  wrap.className = "table-wrap";
  wrap.tabIndex = 0;
  const t = el(doc, "table", wrap);
  const tr = el(doc, "tr", el(doc, "thead", t));
  head.forEach((cell, k) => {
    const th = el(doc, "th", tr);
    th.scope = "col";
    if (align[k]) th.className = "align-" + align[k];
    inline(cell, th, doc);
  });
  const body = el(doc, "tbody", t);
  i += 2;
  while (i < lines.length && lines[i].trim() && lines[i].includes("|")) {
    const row = el(doc, "tr", body);
    const cells = splitRow(lines[i]);
    head.forEach((_, k) => {
      const td = el(doc, "td", row);
      if (align[k]) td.className = "align-" + align[k];
      inline(cells[k] || "", td, doc);
    });
    i++;
  }
  return i;
}

function indentOf(line) {
  return line.length - line.trimStart().length;
}

function list(lines, i, parent, doc, depth) {
  const first = ITEM.exec(lines[i]);
  const ordered = /\d/.test(first[2]);
  const listEl = el(doc, ordered ? "ol" : "ul", parent);
  if (ordered && parseInt(first[2], 10) !== 1) listEl.start = parseInt(first[2], 10);
  const baseIndent = first[1].length;
  while (i < lines.length) {
    const m = ITEM.exec(lines[i]);
    if (!m || m[1].length > baseIndent + 3 || m[1].length < baseIndent || /\d/.test(m[2]) !== ordered) break;
    const contentIndent = m[1].length + m[2].length + 1;
    const item = [m[3] || ""];
    i++;
    while (i < lines.length) {
      const line = lines[i];
      if (!line.trim()) {
        // A blank line ends the item unless the next text is indented under it.
        let j = i;
        while (j < lines.length && !lines[j].trim()) j++;
        if (j < lines.length && indentOf(lines[j]) >= contentIndent) {
          for (; i < j; i++) item.push("");
          continue;
        }
        break;
      }
      const ind = indentOf(line);
      if (ind >= contentIndent) item.push(line.slice(contentIndent));
      else if (ITEM.test(line) || startsBlock(line)) break;
      else item.push(line.trim()); // lazy continuation of the item's paragraph
      i++;
    }
    const li = el(doc, "li", listEl);
    if (depth < 8) {
      blocks(item, li, doc, depth + 1);
      // A tight item is its text, not a paragraph in it.
      if (li.childNodes.length === 1 && li.firstChild.nodeName === "P") li.replaceChildren(...li.firstChild.childNodes);
    } else li.textContent = item.join("\n");
    let j = i;
    while (j < lines.length && !lines[j].trim()) j++;
    if (j < lines.length && ITEM.test(lines[j]) && indentOf(lines[j]) >= baseIndent && indentOf(lines[j]) <= baseIndent + 3) i = j;
  }
  return i;
}

/** Inline Markdown of `text` appended to `parent`. */
function inline(text, parent, doc, depth = 0) {
  let buf = "";
  const flush = () => {
    if (buf) parent.appendChild(doc.createTextNode(buf));
    buf = "";
  };
  let k = 0;
  while (k < text.length) {
    const c = text[k];
    const rest = text.slice(k);
    let m;
    if (c === "\\" && k + 1 < text.length && /[!-/:-@[-`{-~]/.test(text[k + 1])) {
      buf += text[k + 1];
      k += 2;
    } else if (c === "\\" && text[k + 1] === "\n") {
      flush();
      el(doc, "br", parent);
      k += 2;
    } else if (c === "`") {
      const run = /^`+/.exec(rest)[0];
      const end = text.indexOf(run, k + run.length);
      if (end < 0) {
        buf += run;
        k += run.length;
      } else {
        flush();
        let code = text.slice(k + run.length, end).replace(/\n/g, " ");
        if (/^ .* $/.test(code)) code = code.slice(1, -1);
        el(doc, "code", parent, code);
        k = end + run.length;
      }
    } else if (depth < 6 && (m = /^(\*\*|__|~~)(?=\S)([\s\S]*?\S)\1/.exec(rest)) && !(c === "_" && (/\w/.test(text[k - 1] || "") || /\w/.test(text[k + m[0].length] || "")))) {
      flush();
      inline(m[2], el(doc, m[1] === "~~" ? "del" : "strong", parent), doc, depth + 1);
      k += m[0].length;
    } else if (depth < 6 && (m = /^([*_])(?=[^\s*_])([\s\S]*?[^\s\\])\1(?![*_])/.exec(rest)) && !(c === "_" && (/\w/.test(text[k - 1] || "") || /\w/.test(text[k + m[0].length] || "")))) {
      flush();
      inline(m[2], el(doc, "em", parent), doc, depth + 1);
      k += m[0].length;
    } else if ((m = /^(!?)\[((?:[^\[\]\\]|\\.){0,500})\]\(\s*<?([^\s()<>]*)>?(?:\s+"[^"]*")?\s*\)/.exec(rest))) {
      flush();
      link(doc, parent, m[3], m[2] || m[3], depth, m[1] === "!");
      k += m[0].length;
    } else if ((m = /^<((?:https?:\/\/|mailto:)[^\s<>]+)>/.exec(rest))) {
      flush();
      link(doc, parent, m[1], null, depth, false);
      k += m[0].length;
    } else if ((c === "h" || c === "H") && !/\w/.test(text[k - 1] || "") && (m = /^https?:\/\/[^\s<>]+/i.exec(rest))) {
      const url = m[0].replace(/[.,:;!?'")\]]+$/, "");
      flush();
      link(doc, parent, url, null, depth, false);
      k += url.length;
    } else if (c === " " && /^ {2,}\n/.test(rest)) {
      flush();
      el(doc, "br", parent);
      k = text.indexOf("\n", k) + 1;
    } else {
      buf += c;
      k++;
    }
  }
  flush();
}

function link(doc, parent, url, label, depth, image) {
  const href = safeHref(url);
  if (!href) {
    // Not a scheme we allow (javascript:, data:, relative...): show the text only.
    if (label !== null) inline(label, parent, doc, depth + 1);
    else parent.appendChild(doc.createTextNode(url));
    return;
  }
  const a = el(doc, "a", parent);
  a.href = href;
  a.rel = "noopener noreferrer nofollow";
  a.target = "_blank";
  if (image) a.className = "image-link";
  if (label === null) a.textContent = url;
  else inline((image ? "🖼 " : "") + label, a, doc, depth + 1);
}
