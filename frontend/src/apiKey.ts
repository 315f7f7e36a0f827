/**
 * The service API key (SERVICE_API_KEYS on the service side), asked for after a 401 and kept
 * for this tab only: sessionStorage is cleared when the tab closes and is not sent anywhere by
 * itself. Keys never go into URLs (they would end up in access logs).
 */
import { useCallback, useState } from "react";

const STORAGE_KEY = "chat.apiKey";

function stored(): string {
  try {
    return sessionStorage.getItem(STORAGE_KEY) ?? "";
  } catch {
    return ""; // storage disabled: the key lives in memory only
  }
}

export function useApiKey(): [string, (key: string) => void] {
  const [key, setKeyState] = useState(stored);
  const setKey = useCallback((value: string) => {
    const trimmed = value.trim();
    setKeyState(trimmed);
    try {
      if (trimmed) sessionStorage.setItem(STORAGE_KEY, trimmed);
      else sessionStorage.removeItem(STORAGE_KEY);
    } catch {
      // memory only
    }
  }, []);
  return [key, setKey];
}
