/**
 * Markdown for answers, re-rendered on every streamed piece.
 *
 * react-markdown builds React elements from the syntax tree and never uses innerHTML; raw HTML in
 * the text is shown as text, never rendered (no rehype-raw), and `defaultUrlTransform` blanks `javascript:`-style
 * links, so a model's output cannot run script in the page. Half-written Markdown mid-stream
 * (an open code fence, a `**` without its pair) renders as what it is so far and settles when the
 * rest arrives. GitHub-flavoured Markdown adds tables, task lists and strikethrough.
 */
import { memo, type ComponentProps } from "react";
import ReactMarkdown, { defaultUrlTransform, type Components } from "react-markdown";
import remarkGfm from "remark-gfm";

const components: Components = {
  // Links from a model open elsewhere and get no access to this page.
  a: ({ node: _node, ...props }: ComponentProps<"a"> & { node?: unknown }) => (
    <a {...props} target="_blank" rel="noopener noreferrer nofollow" />
  ),
};

const remarkPlugins = [remarkGfm];

export const Markdown = memo(function Markdown({ text }: { text: string }) {
  return (
    <div className="markdown">
      <ReactMarkdown
        remarkPlugins={remarkPlugins}
        components={components}
        urlTransform={defaultUrlTransform}
      >
        {text}
      </ReactMarkdown>
    </div>
  );
});
