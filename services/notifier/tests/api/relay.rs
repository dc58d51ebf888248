//! An SMTP relay that takes a message's DATA and never answers it, so a send is caught in
//! flight: the notifier has handed the whole message over and waits for the reply.

use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// A relay on 127.0.0.1 that holds every DATA unanswered until the client goes away.
pub struct StallingRelay {
    pub port: u16,
    state: Arc<Mutex<Held>>,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Default)]
struct Held {
    /// The Message-ID of each message whose DATA was received and left unanswered.
    message_ids: Vec<String>,
    /// Sessions whose client hung up while its message was held.
    hung_up: usize,
}

impl StallingRelay {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(Mutex::new(Held::default()));
        let task = tokio::spawn({
            let state = Arc::clone(&state);
            async move {
                while let Ok((socket, _)) = listener.accept().await {
                    tokio::spawn(session(socket, Arc::clone(&state)));
                }
            }
        });
        Self { port, state, task }
    }

    /// The Message-IDs of the messages held so far.
    pub fn held(&self) -> Vec<String> {
        self.state.lock().unwrap().message_ids.clone()
    }

    /// How many clients hung up while their message was held.
    pub fn hung_up(&self) -> usize {
        self.state.lock().unwrap().hung_up
    }
}

impl Drop for StallingRelay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn session(socket: TcpStream, state: Arc<Mutex<Held>>) {
    let (read, mut write) = socket.into_split();
    let mut lines = BufReader::new(read).lines();
    if write.write_all(b"220 stall.test ESMTP\r\n").await.is_err() {
        return;
    }
    while let Ok(Some(line)) = lines.next_line().await {
        let verb = line.get(..4).unwrap_or_default().to_ascii_uppercase();
        let reply: &[u8] = match verb.as_str() {
            "EHLO" => b"250-stall.test\r\n250-8BITMIME\r\n250 SMTPUTF8\r\n",
            "HELO" | "MAIL" | "RCPT" | "RSET" | "NOOP" => b"250 2.0.0 Ok\r\n",
            "QUIT" => {
                let _ = write.write_all(b"221 2.0.0 Bye\r\n").await;
                return;
            }
            "DATA" => {
                if write
                    .write_all(b"354 End data with <CR><LF>.<CR><LF>\r\n")
                    .await
                    .is_err()
                {
                    return;
                }
                let mut message_id = String::new();
                while let Ok(Some(line)) = lines.next_line().await {
                    if line == "." {
                        break;
                    }
                    if message_id.is_empty() && line.to_ascii_lowercase().starts_with("message-id:")
                    {
                        message_id = line["message-id:".len()..].trim().to_owned();
                    }
                }
                state.lock().unwrap().message_ids.push(message_id);
                // Never answer; wait for the client to go away.
                while let Ok(Some(_)) = lines.next_line().await {}
                state.lock().unwrap().hung_up += 1;
                return;
            }
            _ => b"502 5.5.2 Command not recognized\r\n",
        };
        if write.write_all(reply).await.is_err() {
            return;
        }
    }
}
