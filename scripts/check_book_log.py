"""Check the log of `jupyter book build --site` run offline: the content must build (every page,
no error), while the HTML theme fetch is allowed to fail (no network here; the deploy workflow
builds the HTML). Exit 1 with the offending lines otherwise."""

import re
import sys

NETWORK = ("api.mystmd.org", "ENOTFOUND", "EAI_AGAIN", "myst templates list", "fetch failed",
           "getaddrinfo", "ECONNREFUSED", "ETIMEDOUT", "Myst CLI Versions", "Required:")


def main(path: str) -> int:
    text = open(path, encoding="utf-8", errors="replace").read()
    lines = text.splitlines()
    bad = [ln for ln in lines
           if ("⛔" in ln or re.search(r"\berror\b", ln, re.I)) and not any(n in ln for n in NETWORK)]
    built = re.search(r"Built (\d+) pages", text)
    if bad or not built:
        print("book content build failed:" if bad else "book content build did not finish:")
        print("\n".join(bad or lines[-20:]))
        return 1
    warnings = [ln for ln in lines if "⚠" in ln]
    print(f"book content build: {built.group(1)} pages, {len(warnings)} warnings, no errors")
    for ln in warnings:
        print("  " + ln)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
