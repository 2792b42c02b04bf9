//! Real-format lines, modelled on public server logs (the OpenSSH and Linux logs of the
//! Loghub collection, Debian and RHEL auth logs), each with the event it must give.

use chrono::{DateTime, Utc};

use crate::event::{EventClass, FieldPath, Outcome, SecurityEvent};
use crate::source::syslog::parse_syslog_all;

fn now() -> DateTime<Utc> {
    "2026-12-10T12:00:00Z".parse().expect("time")
}

fn events(line: &str) -> Vec<SecurityEvent> {
    parse_syslog_all(line, now(), false)
}

fn one(line: &str) -> SecurityEvent {
    let mut all = events(line);
    assert_eq!(all.len(), 1, "{line}");
    all.remove(0)
}

fn get(e: &SecurityEvent, path: &str) -> Option<String> {
    FieldPath::parse(path).expect("path").get(e).map(|v| v.to_text().into_owned())
}

/// (line, class, action, outcome, [(field, value)…])
type Case = (&'static str, EventClass, &'static str, Outcome, &'static [(&'static str, &'static str)]);

const AUTH: EventClass = EventClass::Authentication;
const NET: EventClass = EventClass::Network;
const FAIL: Outcome = Outcome::Failure;
const OK: Outcome = Outcome::Success;
const UNKNOWN: Outcome = Outcome::Unknown;

const OPENSSH: &[Case] = &[
    (
        "Dec 10 09:32:20 LabSZ sshd[24680]: Accepted password for fztu from 119.137.62.142 port 49116 ssh2",
        AUTH,
        "ssh_login",
        OK,
        &[
            ("user.name", "fztu"),
            ("source.ip", "119.137.62.142"),
            ("source.port", "49116"),
            ("host.name", "LabSZ"),
            ("process.pid", "24680"),
        ],
    ),
    (
        "Dec 10 06:55:48 LabSZ sshd[24200]: Failed password for invalid user webmaster from 173.234.31.186 port 38926 ssh2",
        AUTH,
        "ssh_login",
        FAIL,
        &[("user.name", "webmaster"), ("attributes.ssh.invalid_user", "true"), ("network.protocol", "ssh")],
    ),
    (
        "Dec 10 07:51:15 LabSZ sshd[24324]: Failed password for invalid user John Smith from 195.154.37.122 port 58744 ssh2",
        AUTH,
        "ssh_login",
        FAIL,
        &[("user.name", "John Smith"), ("source.ip", "195.154.37.122")],
    ),
    (
        "Dec 10 06:55:46 LabSZ sshd[24200]: Invalid user webmaster from 173.234.31.186",
        AUTH,
        "ssh_invalid_user",
        FAIL,
        &[("user.name", "webmaster"), ("source.ip", "173.234.31.186")],
    ),
    (
        "Jan 12 03:14:07 bastion sshd[881]: Invalid user  from 203.0.113.50 port 40022",
        AUTH,
        "ssh_invalid_user",
        FAIL,
        &[("source.ip", "203.0.113.50"), ("source.port", "40022")],
    ),
    (
        "Jan 12 03:14:07 bastion sshd[881]: Invalid user admin user from 203.0.113.50 port 40022",
        AUTH,
        "ssh_invalid_user",
        FAIL,
        &[("user.name", "admin user")],
    ),
    (
        "Dec 10 06:55:46 LabSZ sshd[24200]: reverse mapping checking getaddrinfo for ns.marryaldkfaczcz.com [173.234.31.186] failed - POSSIBLE BREAK-IN ATTEMPT!",
        NET,
        "ssh_reverse_mapping_failed",
        UNKNOWN,
        &[("source.ip", "173.234.31.186"), ("source.domain", "ns.marryaldkfaczcz.com")],
    ),
    (
        "Dec 10 10:18:03 LabSZ sshd[25035]: pam_unix(sshd:auth): authentication failure; logname= uid=0 euid=0 tty=ssh ruser= rhost=183.62.140.253  user=root",
        AUTH,
        "pam_authentication",
        FAIL,
        &[("user.name", "root"), ("source.ip", "183.62.140.253"), ("attributes.pam.service", "sshd")],
    ),
    (
        "Dec 10 06:55:46 LabSZ sshd[24200]: pam_unix(sshd:auth): authentication failure; logname= uid=0 euid=0 tty=ssh ruser= rhost=112-65-121-18.static.example.net",
        AUTH,
        "pam_authentication",
        FAIL,
        &[("source.domain", "112-65-121-18.static.example.net")],
    ),
    (
        "Dec 10 06:55:46 LabSZ sshd[24200]: pam_unix(sshd:auth): check pass; user unknown",
        AUTH,
        "pam_authentication",
        FAIL,
        &[("attributes.pam.user_unknown", "true")],
    ),
    (
        "Dec 10 10:18:05 LabSZ sshd[25035]: Disconnecting: Too many authentication failures for root [preauth]",
        AUTH,
        "ssh_max_auth_tries",
        FAIL,
        &[("user.name", "root")],
    ),
    (
        "Mar  3 04:12:01 bastion sshd[7001]: error: maximum authentication attempts exceeded for invalid user oracle from 198.51.100.23 port 50122 ssh2 [preauth]",
        AUTH,
        "ssh_max_auth_tries",
        FAIL,
        &[("user.name", "oracle"), ("source.ip", "198.51.100.23"), ("attributes.ssh.invalid_user", "true")],
    ),
    (
        "Mar  3 04:12:01 bastion sshd[7001]: Disconnecting authenticating user root 198.51.100.23 port 50122: Too many authentication failures [preauth]",
        AUTH,
        "ssh_max_auth_tries",
        FAIL,
        &[("user.name", "root"), ("source.ip", "198.51.100.23")],
    ),
    (
        "Dec 10 11:03:40 LabSZ sshd[25448]: Received disconnect from 183.62.140.253: 11: Bye Bye [preauth]",
        NET,
        "ssh_disconnect",
        UNKNOWN,
        &[("source.ip", "183.62.140.253"), ("attributes.ssh.preauth", "true")],
    ),
    (
        "Mar  3 04:12:02 bastion sshd[7002]: Received disconnect from 2001:db8::7 port 56900:11: Normal Shutdown [preauth]",
        NET,
        "ssh_disconnect",
        UNKNOWN,
        &[("source.ip", "2001:db8::7"), ("source.port", "56900")],
    ),
    (
        "Mar  3 04:12:02 bastion sshd[7002]: Disconnected from invalid user test 198.51.100.23 port 50122 [preauth]",
        NET,
        "ssh_disconnect",
        UNKNOWN,
        &[("user.name", "test"), ("source.ip", "198.51.100.23")],
    ),
    (
        "Dec 10 06:55:48 LabSZ sshd[24200]: Connection closed by 173.234.31.186 [preauth]",
        NET,
        "ssh_connection_closed",
        UNKNOWN,
        &[("source.ip", "173.234.31.186")],
    ),
    (
        "Mar  3 04:12:03 bastion sshd[7003]: Connection closed by authenticating user root 198.51.100.23 port 50124 [preauth]",
        NET,
        "ssh_connection_closed",
        UNKNOWN,
        &[("user.name", "root"), ("source.port", "50124")],
    ),
    (
        "Mar  3 04:12:04 bastion sshd[7004]: Did not receive identification string from 192.0.2.77 port 61000",
        NET,
        "ssh_no_identification",
        UNKNOWN,
        &[("source.ip", "192.0.2.77")],
    ),
    (
        "Mar  3 04:12:05 bastion sshd[7005]: Unable to negotiate with 192.0.2.78 port 61001: no matching key exchange method found. Their offer: diffie-hellman-group1-sha1 [preauth]",
        NET,
        "ssh_negotiation_failed",
        FAIL,
        &[("source.ip", "192.0.2.78")],
    ),
    (
        "Mar  3 04:12:06 bastion sshd[7006]: Bad protocol version identification 'GET / HTTP/1.1' from 192.0.2.79 port 61002",
        NET,
        "ssh_bad_protocol",
        FAIL,
        &[("source.ip", "192.0.2.79")],
    ),
    (
        "Mar  3 04:12:07 bastion sshd[7007]: User root from 192.0.2.80 not allowed because not listed in AllowUsers",
        AUTH,
        "ssh_login_not_allowed",
        FAIL,
        &[("user.name", "root"), ("source.ip", "192.0.2.80")],
    ),
    (
        "Mar  3 04:12:08 bastion sshd[7008]: Timeout before authentication for 192.0.2.81 port 61003",
        NET,
        "ssh_auth_timeout",
        FAIL,
        &[("source.ip", "192.0.2.81")],
    ),
    (
        "Dec 10 06:55:46 LabSZ sshd[24200]: input_userauth_request: invalid user webmaster [preauth]",
        AUTH,
        "ssh_invalid_user_request",
        UNKNOWN,
        &[("user.name", "webmaster")],
    ),
    (
        "Dec 10 10:18:05 LabSZ sshd[25035]: PAM 5 more authentication failures; logname= uid=0 euid=0 tty=ssh ruser= rhost=183.62.140.253  user=root",
        AUTH,
        "ssh_pam_more_failures",
        FAIL,
        &[("user.name", "root"), ("source.ip", "183.62.140.253"), ("attributes.ssh.failures", "5")],
    ),
    (
        "Dec 10 09:32:20 LabSZ sshd[24680]: pam_unix(sshd:session): session opened for user fztu by (uid=0)",
        AUTH,
        "session_opened",
        OK,
        &[("user.name", "fztu")],
    ),
    (
        "Dec 10 09:40:01 LabSZ sshd[24680]: pam_unix(sshd:session): session closed for user fztu",
        AUTH,
        "session_closed",
        OK,
        &[("user.name", "fztu")],
    ),
    (
        "Nov 30 22:01:13 web01 sshd-session[4410]: Failed password for root from 203.0.113.9 port 50111 ssh2",
        AUTH,
        "ssh_login",
        FAIL,
        &[("user.name", "root")],
    ),
];

const LINUX: &[Case] = &[
    (
        "Jun 14 15:16:01 combo sshd(pam_unix)[19939]: authentication failure; logname= uid=0 euid=0 tty=NODEVssh ruser= rhost=218.188.2.4",
        AUTH,
        "logon",
        FAIL,
        &[
            ("source.ip", "218.188.2.4"),
            ("provider", "sshd"),
            ("network.protocol", "ssh"),
            ("attributes.pam.legacy", "true"),
        ],
    ),
    (
        "Jun 15 02:04:59 combo sshd(pam_unix)[20882]: authentication failure; logname= uid=0 euid=0 tty=NODEVssh ruser= rhost=220-135-151-1.hinet-ip.hinet.net  user=root",
        AUTH,
        "logon",
        FAIL,
        &[("source.domain", "220-135-151-1.hinet-ip.hinet.net"), ("user.name", "root")],
    ),
    ("Jun 14 15:16:02 combo sshd(pam_unix)[19937]: check pass; user unknown", AUTH, "pam_authentication", FAIL, &[]),
    (
        "Jun 15 04:06:18 combo su(pam_unix)[21416]: session opened for user cyrus by (uid=0)",
        AUTH,
        "session_opened",
        OK,
        &[("user.name", "cyrus"), ("provider", "su")],
    ),
    (
        "Jun 15 04:06:19 combo su(pam_unix)[21416]: session closed for user cyrus",
        AUTH,
        "session_closed",
        OK,
        &[("user.name", "cyrus")],
    ),
    (
        "Jul  1 09:01:05 combo su(pam_unix)[2455]: authentication failure; logname=alice uid=500 euid=0 tty= ruser=alice rhost=  user=root",
        EventClass::Authorization,
        "su",
        FAIL,
        &[("user.name", "alice"), ("user.target.name", "root")],
    ),
    (
        "Jun 15 12:12:34 combo ftpd[23578]: connection from 206.47.209.10 () at Wed Jun 15 12:12:34 2005",
        NET,
        "ftp_connection",
        UNKNOWN,
        &[("source.ip", "206.47.209.10"), ("network.protocol", "ftp")],
    ),
    (
        "Jun 20 03:40:59 combo ftpd[8829]: ANONYMOUS FTP LOGIN FROM 84.102.20.2, (anonymous)",
        AUTH,
        "logon",
        OK,
        &[("user.name", "anonymous"), ("source.ip", "84.102.20.2")],
    ),
    (
        "Jun 18 02:23:10 combo klogind[2474]: Authentication failed from 163.27.187.39 (163.27.187.39): Permission denied in replay cache code",
        AUTH,
        "logon",
        FAIL,
        &[("source.ip", "163.27.187.39"), ("network.protocol", "klogin")],
    ),
    ("Jun 18 02:23:10 combo klogind[2474]: Kerberos authentication failed", AUTH, "kerberos_failure", FAIL, &[]),
    (
        "Jul 10 16:12:04 combo login(pam_unix)[2445]: authentication failure; logname= uid=0 euid=0 tty=tty1 ruser= rhost=  user=root",
        AUTH,
        "logon",
        FAIL,
        &[("user.name", "root")],
    ),
    (
        "Jul 10 16:12:06 combo login[2445]: FAILED LOGIN 1 FROM (null) FOR root, Authentication failure",
        AUTH,
        "logon",
        FAIL,
        &[("user.name", "root")],
    ),
];

const SERVICES: &[Case] = &[
    (
        "Mar  3 10:00:00 db01 sudo:   alice : TTY=pts/0 ; PWD=/srv/www ; USER=root ; COMMAND=/usr/bin/systemctl restart nginx",
        EventClass::Authorization,
        "sudo",
        OK,
        &[("user.name", "alice"), ("user.target.name", "root"), ("process.executable", "/usr/bin/systemctl")],
    ),
    (
        "Mar  3 10:00:01 db01 sudo: mallory : 3 incorrect password attempts ; TTY=pts/1 ; PWD=/tmp ; USER=root ; COMMAND=/bin/sh",
        EventClass::Authorization,
        "sudo",
        FAIL,
        &[("user.name", "mallory"), ("attributes.sudo.problem", "3 incorrect password attempts")],
    ),
    (
        "Mar  3 10:00:02 db01 sudo:      bob : user NOT in sudoers ; TTY=pts/2 ; PWD=/var/tmp ; USER=root ; COMMAND=/bin/bash",
        EventClass::Authorization,
        "sudo",
        FAIL,
        &[("user.name", "bob")],
    ),
    (
        "Mar  3 10:00:03 db01 sudo:    alice : TTY=pts/0 ; PWD=/ ; USER=root ; ENV=PATH=/usr/bin ; COMMAND=/usr/bin/id",
        EventClass::Authorization,
        "sudo",
        OK,
        &[("process.command_line", "/usr/bin/id")],
    ),
    (
        "Mar  3 10:00:04 db01 sudo: pam_unix(sudo:auth): authentication failure; logname=bob uid=1001 euid=0 tty=/dev/pts/2 ruser=bob rhost=  user=bob",
        EventClass::Authorization,
        "sudo",
        FAIL,
        &[("user.name", "bob"), ("user.target.name", "bob")],
    ),
    (
        "Mar  3 10:00:05 db01 su[3001]: FAILED SU (to root) bob on pts/2",
        EventClass::Authorization,
        "su",
        FAIL,
        &[("user.name", "bob"), ("user.target.name", "root")],
    ),
    (
        "Mar  3 10:00:06 db01 su[3002]: (to root) alice on pts/0",
        EventClass::Authorization,
        "su",
        OK,
        &[("user.name", "alice"), ("user.target.name", "root")],
    ),
    (
        "Mar  3 10:00:07 db01 su[3003]: pam_unix(su:auth): authentication failure; logname=bob uid=1001 euid=0 tty=/dev/pts/2 ruser=bob rhost=  user=root",
        EventClass::Authorization,
        "su",
        FAIL,
        &[("user.name", "bob"), ("user.target.name", "root")],
    ),
    (
        "Mar  3 10:01:00 db01 useradd[4001]: new user: name=backdoor, UID=0, GID=0, home=/root, shell=/bin/bash, from=/dev/pts/0",
        EventClass::Account,
        "user_created",
        OK,
        &[("user.target.name", "backdoor"), ("user.target.id", "0")],
    ),
    (
        "Mar  3 10:01:01 db01 groupadd[4002]: group added to /etc/group: name=docker, GID=999",
        EventClass::Account,
        "group_created",
        OK,
        &[("user.target.roles", "docker")],
    ),
    (
        "Mar  3 10:01:02 db01 usermod[4003]: add 'backdoor' to group 'sudo'",
        EventClass::Account,
        "group_member_added",
        OK,
        &[("user.target.name", "backdoor"), ("user.target.roles", "sudo")],
    ),
    (
        "Mar  3 10:01:03 db01 gpasswd[4004]: user eve added by root to group wheel",
        EventClass::Account,
        "group_member_added",
        OK,
        &[("user.name", "root"), ("user.target.name", "eve"), ("user.target.roles", "wheel")],
    ),
    (
        "Mar  3 10:01:04 db01 userdel[4005]: delete user 'intern'",
        EventClass::Account,
        "user_deleted",
        OK,
        &[("user.target.name", "intern")],
    ),
    (
        "Mar  3 10:01:05 db01 passwd[4006]: pam_unix(passwd:chauthtok): password changed for alice",
        EventClass::Account,
        "password_changed",
        OK,
        &[("user.target.name", "alice")],
    ),
    (
        "Mar  3 10:02:00 db01 systemd-logind[612]: New session 42 of user alice.",
        AUTH,
        "session_opened",
        OK,
        &[("user.name", "alice"), ("labels.session", "42")],
    ),
    (
        "Mar  3 10:03:00 ftp01 vsftpd[5001]: [bob] FAIL LOGIN: Client \"::ffff:198.51.100.40\"",
        AUTH,
        "logon",
        FAIL,
        &[("user.name", "bob"), ("source.ip", "198.51.100.40"), ("network.protocol", "ftp")],
    ),
    (
        "Mar  3 10:03:01 ftp01 vsftpd[5002]: [pid 5003] [bob] OK LOGIN: Client \"198.51.100.41\"",
        AUTH,
        "logon",
        OK,
        &[("user.name", "bob")],
    ),
    (
        "Mar  3 10:03:02 ftp01 proftpd[5004]: ftp01 (198.51.100.42[198.51.100.42]) - USER admin (Login failed): Incorrect password",
        AUTH,
        "logon",
        FAIL,
        &[("user.name", "admin"), ("source.ip", "198.51.100.42")],
    ),
    (
        "Mar  3 10:04:00 mx1 postfix/smtpd[6001]: warning: unknown[198.51.100.50]: SASL LOGIN authentication failed: authentication failure",
        AUTH,
        "logon",
        FAIL,
        &[("source.ip", "198.51.100.50"), ("network.protocol", "smtp"), ("attributes.postfix.sasl_method", "LOGIN")],
    ),
    (
        "Mar  3 10:04:01 mx1 dovecot: imap-login: Disconnected (auth failed, 1 attempts in 2 secs): user=<bob>, method=PLAIN, rip=198.51.100.51, lip=10.0.0.5, TLS, session=<abc>",
        AUTH,
        "logon",
        FAIL,
        &[("user.name", "bob"), ("source.ip", "198.51.100.51"), ("network.protocol", "imap")],
    ),
    (
        "Mar  3 10:04:02 mx1 dovecot: pop3-login: Login: user=<carol>, method=PLAIN, rip=198.51.100.52, lip=10.0.0.5, mpid=7001, TLS",
        AUTH,
        "logon",
        OK,
        &[("user.name", "carol"), ("network.protocol", "pop3")],
    ),
    (
        "Mar  3 10:05:00 kdc1 krb5kdc[7001](info): AS_REQ (4 etypes {18 17 16 23}) 10.0.0.44: PREAUTH_FAILED: bob@EXAMPLE.COM for krbtgt/EXAMPLE.COM@EXAMPLE.COM, Preauthentication failed",
        AUTH,
        "kerberos_tgt_request",
        FAIL,
        &[("user.name", "bob"), ("user.domain", "EXAMPLE.COM"), ("source.ip", "10.0.0.44")],
    ),
    (
        "Mar  3 10:06:00 fw1 kernel: [UFW BLOCK] IN=eth0 OUT= MAC=00:16:3e:00:00:01 SRC=203.0.113.99 DST=10.0.0.1 LEN=40 TOS=0x00 PREC=0x00 TTL=241 ID=54321 PROTO=TCP SPT=40000 DPT=23 WINDOW=1024 RES=0x00 SYN URGP=0",
        NET,
        "connection_blocked",
        FAIL,
        &[
            ("source.ip", "203.0.113.99"),
            ("destination.ip", "10.0.0.1"),
            ("destination.port", "23"),
            ("network.transport", "tcp"),
            ("attributes.netfilter.prefix", "[UFW BLOCK]"),
        ],
    ),
    (
        "Mar  3 10:06:01 fw1 kernel: [ 5123.443210] IPTables-Accepted: IN=eth0 OUT= SRC=10.0.0.7 DST=10.0.0.1 LEN=60 PROTO=UDP SPT=5353 DPT=53",
        NET,
        "connection",
        OK,
        &[("destination.port", "53"), ("network.transport", "udp")],
    ),
];

fn check(cases: &[Case]) {
    for (line, class, action, outcome, fields) in cases {
        let e = one(line);
        assert_eq!((e.class, e.action.as_deref(), e.outcome), (*class, Some(*action), *outcome), "{line}\n{e:#?}");
        for (path, value) in *fields {
            assert_eq!(get(&e, path).as_deref(), Some(*value), "{path} of {line}\n{e:#?}");
        }
    }
}

#[test]
fn the_openssh_family() {
    check(OPENSSH);
}

#[test]
fn legacy_pam_ftp_kerberos_and_login() {
    check(LINUX);
}

#[test]
fn sudo_su_accounts_sessions_mail_and_firewall() {
    check(SERVICES);
}

#[test]
fn folded_repeats_become_one_event_per_attempt() {
    let all = events(
        "Dec 10 10:18:05 LabSZ sshd[25035]: message repeated 5 times: [ Failed password for root from 183.62.140.253 port 40213 ssh2]",
    );
    assert_eq!(all.len(), 5);
    let ids: std::collections::BTreeSet<_> = all.iter().map(|e| e.id).collect();
    assert_eq!(ids.len(), 5, "each attempt is its own event");
    for e in &all {
        assert_eq!((e.class, e.action.as_deref(), e.outcome), (AUTH, Some("ssh_login"), FAIL));
        assert_eq!(get(e, "source.ip").as_deref(), Some("183.62.140.253"));
        assert_eq!(get(e, "labels.syslog_repeated").as_deref(), Some("5"));
    }
}

#[test]
fn unrecognised_lines_stay_system_events() {
    for line in [
        "Dec 10 06:55:46 LabSZ sshd[24200]: Server listening on 0.0.0.0 port 22.",
        "Jun 19 04:08:57 combo cups: cupsd shutdown succeeded",
        "Mar  3 10:00:00 db01 sudo: something unexpected",
        "Mar  3 10:06:01 fw1 kernel: eth0: link up",
    ] {
        assert_eq!(one(line).class, EventClass::System, "{line}");
    }
}
