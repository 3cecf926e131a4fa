// Small DOM builders: every piece of data goes in as text, never as markup.

export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (name === "class") node.className = value;
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

export function table(headings, rows, attrs = {}) {
  return el("table", attrs,
    el("thead", {}, el("tr", {}, headings.map((h) => el("th", {}, h)))),
    el("tbody", {}, rows.map((cells) => el("tr", {}, cells.map((c) => el("td", {}, c))))));
}

export function health(status) {
  return el("span", { class: `health ${status}` }, status);
}

export function fmt(value, unit = "") {
  if (value === null || value === undefined) return "–";
  return `${Number(Number(value).toPrecision(3))}${unit}`;
}
