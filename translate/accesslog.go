package translate

import (
	"fmt"
	"strings"

	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	fileaccesslogv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/file/v3"
	"github.com/envoyproxy/go-control-plane/pkg/wellknown"
	"google.golang.org/protobuf/types/known/structpb"
)

// AccessLog is the sidecar access log, Istio's MeshConfig accessLogFile and
// accessLogEncoding. It is off unless File is set, as in Istio. Proxyless
// gRPC has no access log; only Envoy sidecars get it.
type AccessLog struct {
	// File is where Envoy writes the log ("/dev/stdout" in Istio's
	// examples); empty turns access logging off.
	File string
	// Encoding is TEXT (the default) or JSON.
	Encoding AccessLogEncoding
}

// AccessLogEncoding is MeshConfig's accessLogEncoding.
type AccessLogEncoding string

// Encodings.
const (
	AccessLogText AccessLogEncoding = "TEXT"
	AccessLogJSON AccessLogEncoding = "JSON"
)

// ParseAccessLogEncoding accepts TEXT and JSON in any case, as Istio's
// MeshConfig does; empty is TEXT.
func ParseAccessLogEncoding(s string) (AccessLogEncoding, error) {
	switch e := AccessLogEncoding(strings.ToUpper(s)); e {
	case "", AccessLogText:
		return AccessLogText, nil
	case AccessLogJSON:
		return e, nil
	}
	return "", fmt.Errorf("access log encoding %q is not one of %s, %s", s, AccessLogText, AccessLogJSON)
}

// istioTextLogFormat is Istio's default text access log format
// (EnvoyTextLogFormat; istio.io "Default access log format"), field for
// field, followed by one field of minimesh's: whether an AUDIT policy
// matched the request (see auditField). Fields are separated by spaces, so
// parsers of Istio's format keep working.
const istioTextLogFormat = `[%START_TIME%] "%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%" ` +
	`%RESPONSE_CODE% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS% %CONNECTION_TERMINATION_DETAILS% ` +
	`"%UPSTREAM_TRANSPORT_FAILURE_REASON%" %BYTES_RECEIVED% %BYTES_SENT% %DURATION% ` +
	`%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% "%REQ(X-FORWARDED-FOR)%" "%REQ(USER-AGENT)%" "%REQ(X-REQUEST-ID)%" ` +
	`"%REQ(:AUTHORITY)%" "%UPSTREAM_HOST%" %UPSTREAM_CLUSTER_RAW% %UPSTREAM_LOCAL_ADDRESS% ` +
	`%DOWNSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_REMOTE_ADDRESS% %REQUESTED_SERVER_NAME% %ROUTE_NAME% ` +
	auditField + "\n"

// auditField is where an AUDIT policy's mark shows. Istio turns AUDIT into
// an RBAC filter with action LOG, which sets access_log_hint in the shared
// dynamic metadata namespace envoy.common when one of its rules matches,
// and leaves it to a logging plugin to read; Istio's file log never shows
// it, so minimesh adds this one field: "true" for an audited request or
// connection, "-" otherwise.
const (
	auditField   = "%DYNAMIC_METADATA(envoy.common:access_log_hint)%"
	auditJSONKey = "access_log_hint"
)

// istioJSONLogFields are Istio's default JSON access log fields
// (EnvoyJSONLogFormatIstio) plus the audit mark.
var istioJSONLogFields = map[string]string{
	"start_time":                        "%START_TIME%",
	"route_name":                        "%ROUTE_NAME%",
	"method":                            "%REQ(:METHOD)%",
	"path":                              "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%",
	"protocol":                          "%PROTOCOL%",
	"response_code":                     "%RESPONSE_CODE%",
	"response_flags":                    "%RESPONSE_FLAGS%",
	"response_code_details":             "%RESPONSE_CODE_DETAILS%",
	"connection_termination_details":    "%CONNECTION_TERMINATION_DETAILS%",
	"bytes_received":                    "%BYTES_RECEIVED%",
	"bytes_sent":                        "%BYTES_SENT%",
	"duration":                          "%DURATION%",
	"upstream_service_time":             "%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)%",
	"x_forwarded_for":                   "%REQ(X-FORWARDED-FOR)%",
	"user_agent":                        "%REQ(USER-AGENT)%",
	"request_id":                        "%REQ(X-REQUEST-ID)%",
	"authority":                         "%REQ(:AUTHORITY)%",
	"upstream_host":                     "%UPSTREAM_HOST%",
	"upstream_cluster":                  "%UPSTREAM_CLUSTER_RAW%",
	"upstream_local_address":            "%UPSTREAM_LOCAL_ADDRESS%",
	"downstream_local_address":          "%DOWNSTREAM_LOCAL_ADDRESS%",
	"downstream_remote_address":         "%DOWNSTREAM_REMOTE_ADDRESS%",
	"requested_server_name":             "%REQUESTED_SERVER_NAME%",
	"upstream_transport_failure_reason": "%UPSTREAM_TRANSPORT_FAILURE_REASON%",
	auditJSONKey:                        auditField,
}

// AccessLogs are the access loggers for every HTTP connection manager and
// TCP proxy of a sidecar, inbound and outbound, as Istio configures them
// from MeshConfig: one file logger, nil when logging is off.
func AccessLogs(a AccessLog) []*accesslogv3.AccessLog {
	if a.File == "" {
		return nil
	}
	format := &corev3.SubstitutionFormatString{}
	if a.Encoding == AccessLogJSON {
		fields := make(map[string]*structpb.Value, len(istioJSONLogFields))
		for k, v := range istioJSONLogFields {
			fields[k] = structpb.NewStringValue(v)
		}
		format.Format = &corev3.SubstitutionFormatString_JsonFormat{JsonFormat: &structpb.Struct{Fields: fields}}
	} else {
		format.Format = &corev3.SubstitutionFormatString_TextFormatSource{TextFormatSource: &corev3.DataSource{
			Specifier: &corev3.DataSource_InlineString{InlineString: istioTextLogFormat},
		}}
	}
	return []*accesslogv3.AccessLog{{
		Name: wellknown.FileAccessLog,
		ConfigType: &accesslogv3.AccessLog_TypedConfig{TypedConfig: mustAny(&fileaccesslogv3.FileAccessLog{
			Path:            a.File,
			AccessLogFormat: &fileaccesslogv3.FileAccessLog_LogFormat{LogFormat: format},
		})},
	}}
}
