// MathJax reads this before it loads: typeset only what pymdownx.arithmatex marked as math
// (`$...$` and `$$...$$` in the pages and the docstrings).
window.MathJax = {
  tex: {
    inlineMath: [["\\(", "\\)"]],
    displayMath: [["\\[", "\\]"]],
    processEscapes: true,
    processEnvironments: true,
  },
  options: {
    ignoreHtmlClass: ".*|",
    processHtmlClass: "arithmatex",
  },
};
