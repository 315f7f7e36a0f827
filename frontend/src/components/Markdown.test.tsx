import { renderToStaticMarkup } from "react-dom/server";
import { describe, expect, it } from "vitest";
import { Markdown } from "./Markdown";

const html = (text: string) => renderToStaticMarkup(<Markdown text={text} />);

describe("Markdown", () => {
  it("shows raw HTML from a model as text, never as elements", () => {
    const out = html('Look: <img src=x onerror="alert(1)"> <script>alert(2)</script> <b>bold?</b>');
    expect(out).not.toMatch(/<img|<script|<b>/);
    expect(out).toContain("&lt;img src=x onerror=&quot;alert(1)&quot;&gt;");
    expect(out).toContain("&lt;script&gt;alert(2)&lt;/script&gt;");
  });

  it("blanks script URLs and opens links elsewhere without access to the page", () => {
    const out = html("[click](javascript:alert(1)) [data](data:text/html,<script>x</script>) [ok](https://example.com/a)");
    expect(out).not.toContain("javascript:");
    expect(out).not.toContain("data:text/html");
    expect(out).toContain('href="https://example.com/a"');
    expect(out).toContain('rel="noopener noreferrer nofollow"');
    expect(out).toContain('target="_blank"');
  });

  it("renders code blocks, GFM tables, and a half-streamed fence as code so far", () => {
    expect(html("```ts\nconst a = 1 < 2;\n```")).toContain(
      '<pre><code class="language-ts">const a = 1 &lt; 2;\n</code></pre>',
    );
    expect(html("| a | b |\n| - | - |\n| 1 | 2 |")).toContain("<td>1</td>");
    expect(html("Text\n\n```py\nprint(1)")).toContain('<code class="language-py">print(1)\n</code>');
  });
});
