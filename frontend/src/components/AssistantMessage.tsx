import type { Answer, AnswerError, AnswerMetrics } from "../answer";
import { finishNote } from "../answer";
import { Markdown } from "./Markdown";

const ms = (value: number | null) => (value == null ? "–" : `${Math.round(value)} ms`);
const rate = (value: number | null) => (value == null ? "– tok/s" : `${value.toFixed(1)} tok/s`);

export function MetricsLine({ metrics }: { metrics: AnswerMetrics }) {
  const tokens = [
    metrics.outputTokens != null ? `${metrics.outputTokens} tokens out` : undefined,
    metrics.promptTokens != null ? `${metrics.promptTokens} in` : undefined,
  ].filter(Boolean);
  return (
    <div
      className="metrics"
      data-testid="metrics"
      data-final={metrics.fromService ? "true" : undefined}
      title={metrics.fromService ? "measured by the service" : "measured in the browser"}
    >
      <span>TTFT {ms(metrics.ttftMs)}</span>
      {(metrics.tokensPerSecond != null || metrics.outputTokens != null) && (
        <span>{rate(metrics.tokensPerSecond)}</span>
      )}
      {tokens.length > 0 && <span>{tokens.join(" · ")}</span>}
    </div>
  );
}

function errorText(error: AnswerError): string {
  const detail = error.message.replace(/([^.!?])$/, "$1.");
  return `Error${error.type ? ` (${error.type})` : ""}: ${detail}`;
}

function retryAdvice(error: AnswerError): string {
  if (error.needsKey) return "This service needs an API key: enter it above, then retry.";
  if (error.retryable === true) {
    return error.retryAfterSeconds
      ? `A retry may help; the service asks to wait ${error.retryAfterSeconds} s.`
      : "A retry may help.";
  }
  if (error.retryable === false) return "Retrying the same request will not help.";
  return "";
}

export function ErrorNote({ error, onRetry }: { error: AnswerError; onRetry?: () => void }) {
  const canRetry = onRetry && (error.retryable !== false || error.needsKey);
  return (
    <div className="note error-note" role="alert">
      <span className="error-message">{errorText(error)}</span> <span className="advice">{retryAdvice(error)}</span>
      {canRetry && (
        <button type="button" className="retry" onClick={onRetry}>
          Retry
        </button>
      )}
    </div>
  );
}

export function AssistantMessage({ answer, onRetry }: { answer: Answer; onRetry?: () => void }) {
  const note =
    answer.state === "stopped"
      ? answer.text
        ? "Stopped."
        : "Stopped before the answer began."
      : finishNote(answer.finishReason);
  return (
    <div className={`message assistant ${answer.state}`} data-testid="assistant" data-state={answer.state}>
      <div className="bubble">
        {answer.reasoning && (
          <details className="reasoning" open={answer.state === "streaming" && !answer.text}>
            <summary>Reasoning</summary>
            <div className="reasoning-text">{answer.reasoning}</div>
          </details>
        )}
        {answer.text ? (
          <Markdown text={answer.text} />
        ) : (
          answer.state === "waiting" && <span className="typing" aria-label="waiting for the answer" />
        )}
        {answer.state === "streaming" && <span className="cursor" aria-hidden="true" />}
        {note && <div className="note warn-note">{note}</div>}
        {answer.error && <ErrorNote error={answer.error} onRetry={onRetry} />}
      </div>
      {answer.metrics && <MetricsLine metrics={answer.metrics} />}
    </div>
  );
}

export function UserMessage({ text, dropped }: { text: string; dropped?: boolean }) {
  return (
    <div
      className={`message user${dropped ? " dropped" : ""}`}
      data-testid="user"
      title={dropped ? "Not part of the conversation: it got no answer" : undefined}
    >
      <div className="bubble">{text}</div>
    </div>
  );
}
