import { useLayoutEffect, useRef, type ReactNode } from "react";

/** The scrolling message list; follows new text while the reader is at the bottom. */
export function Conversation({ children, empty }: { children: ReactNode; empty: boolean }) {
  const scroller = useRef<HTMLDivElement>(null);
  const follow = useRef(true);

  useLayoutEffect(() => {
    const element = scroller.current;
    if (element && follow.current) element.scrollTop = element.scrollHeight;
  });

  const onScroll = () => {
    const element = scroller.current;
    if (element) follow.current = element.scrollHeight - element.scrollTop - element.clientHeight < 80;
  };

  return (
    <main className="scroller" ref={scroller} onScroll={onScroll}>
      <div className="messages" aria-live="polite">
        {empty ? <p className="empty">Ask anything. The answer streams in as it is written.</p> : children}
      </div>
    </main>
  );
}
